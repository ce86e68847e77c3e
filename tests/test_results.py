"""Confidence intervals, results files and tables."""

from __future__ import annotations

import json
import math

import pytest

from metarun.files import atomic_write
from metarun.results import build_table, ci95, load_runs, write_results, write_table


def test_ci95_on_a_known_vector():
    # mean 5, sample variance (Bessel) = 32/7, n = 8.
    mean, half = ci95([2, 4, 4, 4, 5, 5, 7, 9])
    assert mean == pytest.approx(5.0)
    assert half == pytest.approx(1.96 * math.sqrt(32 / 7 / 8))


def test_ci95_needs_two_scores():
    with pytest.raises(ValueError, match="at least 2"):
        ci95([1.0])


def test_atomic_write_leaves_no_temporary(tmp_path):
    atomic_write(tmp_path / "a.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "hello"


def record(algo, weighting, mean, seed=0, shots=10):
    return {"data": "sine", "task_kind": "regression", "ways": 1, "shots": shots, "algo": algo,
            "weighting": weighting, "metric": "mse", "mean": mean, "ci95": 0.01, "seed": seed}


def test_table_rows_per_method_columns_per_setting(tmp_path):
    runs = [record("maml", "uniform", 0.5), record("maml", "agreement", 0.4),
            record("reptile", "uniform", 0.6), record("reptile", "uniform", 0.7, shots=5)]
    for i, r in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        write_results(tmp_path / str(i), r)
    table = build_table(load_runs([tmp_path]))
    assert sorted(table.index) == ["maml + agreement", "maml + uniform", "reptile + uniform"]
    assert sorted(table.columns) == ["sine 10-shot (mse)", "sine 5-shot (mse)"]
    assert table.loc["maml + agreement", "sine 10-shot (mse)"] == "0.4 ± 0.01"
    assert table.loc["maml + uniform", "sine 5-shot (mse)"] == "—"
    paths = write_table(table, tmp_path)
    assert [p.name for p in paths] == ["table.csv", "table.md", "table.tex"]
    assert "maml + agreement" in paths[1].read_text()
    assert "\\begin{tabular}" in paths[2].read_text() and "0.4 $\\pm$ 0.01" in paths[2].read_text()


def test_several_seeds_are_not_averaged_silently(tmp_path):
    for seed in (0, 1):
        (tmp_path / str(seed)).mkdir()
        write_results(tmp_path / str(seed), record("maml", "uniform", 0.5 + seed, seed=seed))
    table = build_table(load_runs([tmp_path]))
    assert len(table) == 2
    assert json.loads((tmp_path / "0" / "results.json").read_text())["format"] == 1
