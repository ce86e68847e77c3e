"""Confidence intervals, results files and tables."""

from __future__ import annotations

import json
import math

import pytest
from hydra import compose, initialize_config_dir

from metarun.config.store import config_dir, options, register
from metarun.files import atomic_write
from metarun.report.results import build_table, ci95, load_runs, run_table, task_kind, write_results, write_table

register()


def test_ci95_on_a_known_vector_is_students_t():
    # mean 5, sample variance (Bessel) = 32/7, n = 8: t(0.975, 7) = 2.3646 (tables), not 1.96.
    mean, half = ci95([2, 4, 4, 4, 5, 5, 7, 9])
    assert mean == pytest.approx(5.0)
    assert half == pytest.approx(2.364624 * math.sqrt(32 / 7 / 8), rel=1e-6)


def test_ci95_of_two_tasks_is_the_t_interval():
    # scores [0.2, 0.4]: sd = 0.1414, t(0.975, 1) = 12.706 -> ±1.2706; the normal interval said ±0.196.
    mean, half = ci95([0.2, 0.4])
    assert mean == pytest.approx(0.3)
    assert half == pytest.approx(1.270620, rel=1e-5)


def test_ci95_of_one_score_has_no_interval():
    mean, half = ci95([0.7])
    assert mean == 0.7 and math.isnan(half)
    with pytest.raises(ValueError, match="at least one"):
        ci95([])


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
    assert table.loc["maml + agreement", "sine 10-shot (mse)"] == "0.4000 ± 0.010"
    assert table.loc["maml + uniform", "sine 5-shot (mse)"] == "—"
    paths = write_table(table, tmp_path)
    assert [p.name for p in paths] == ["table.csv", "table.md", "table.tex"]
    assert "maml + agreement" in paths[1].read_text()
    assert "\\begin{tabular}" in paths[2].read_text() and "0.4000 $\\pm$ 0.010" in paths[2].read_text()


def test_rows_and_columns_are_in_the_numeric_order_of_their_settings(tmp_path):
    for i, (steps, shots) in enumerate(((10, 20), (3, 20), (1, 20), (1, 5))):
        (tmp_path / str(i)).mkdir()
        write_results(tmp_path / str(i), record("maml", "uniform", 0.5, shots=shots) | {"eval_steps": steps})
    table = build_table(load_runs([tmp_path]))
    # The 5-shot run is alone in its column: its row is the method's plain name. As strings, 10 came before 3.
    assert list(table.index) == ["maml + uniform", "maml + uniform (eval_steps=1)", "maml + uniform (eval_steps=3)",
                                 "maml + uniform (eval_steps=10)"]
    assert list(table.columns) == ["sine 5-shot (mse)", "sine 20-shot (mse)"]


def test_several_seeds_are_not_averaged_silently(tmp_path):
    for seed in (0, 1):
        (tmp_path / str(seed)).mkdir()
        write_results(tmp_path / str(seed), record("maml", "uniform", 0.5 + seed, seed=seed))
    table = build_table(load_runs([tmp_path]))
    assert len(table) == 2
    assert json.loads((tmp_path / "0" / "results.json").read_text())["format"] == 1


def job(root, name, mean, config, choices=None):
    """A finished run folder as metarun writes it: .hydra/config.yaml (and hydra.yaml's choices), results.json."""
    from omegaconf import OmegaConf

    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    if choices:
        OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), folder / ".hydra" / "hydra.yaml")
    write_results(folder, record("maml", "uniform", mean))


def base(**changes):
    config = {"seed": 0, "inner": {"lr": 0.01, "steps": 5}, "eval": {"lr": "${inner.lr}", "steps": "${inner.steps}"},
              "model": {"_target_": "metarun.models.Conv4", "filters": 64, "downsample": "stride"}}
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        config[section] = {**config[section], leaf: value} if leaf else value
    return config


def rows(tmp_path):
    return dict(build_table(load_runs([tmp_path]))["sine 10-shot (mse)"])


def test_runs_that_differ_in_any_setting_each_get_a_row_named_by_it(tmp_path):
    job(tmp_path, "a", 0.5, base())
    job(tmp_path, "b", 0.6, base(inner__lr=0.02))  # eval.lr follows inner.lr: not named
    job(tmp_path, "c", 0.7, base(inner__lr=0.02, seed=1))
    assert rows(tmp_path) == {"maml + uniform (inner.lr=0.01, seed=0)": "0.5000 ± 0.010",
                              "maml + uniform (inner.lr=0.02, seed=0)": "0.6000 ± 0.010",
                              "maml + uniform (inner.lr=0.02, seed=1)": "0.7000 ± 0.010"}


def test_a_group_choice_names_the_row_rather_than_its_keys(tmp_path):
    job(tmp_path, "a", 0.5, base(), {"model": "conv4"})
    job(tmp_path, "b", 0.6, base(model={"_target_": "metarun.models.Conv4", "filters": 32, "downsample": "maxpool"}),
        {"model": "conv4_pool32"})
    assert sorted(rows(tmp_path)) == ["maml + uniform (model=conv4)", "maml + uniform (model=conv4_pool32)"]


def test_identical_runs_are_both_shown_named_by_their_folders(tmp_path):
    job(tmp_path / "monday", "run", 0.5, base())
    job(tmp_path / "tuesday", "run", 0.6, base())
    write_results(tmp_path / "tuesday", record("maml", "uniform", 0.7))  # a copy of results without a config
    assert rows(tmp_path) == {"maml + uniform (run monday/run)": "0.5000 ± 0.010",
                              "maml + uniform (run tuesday)": "0.7000 ± 0.010",
                              "maml + uniform (run tuesday/run)": "0.6000 ± 0.010"}


def test_runs_that_differ_only_in_which_parameters_they_tested_get_a_row_each(tmp_path):
    job(tmp_path / "configs", "last", 0.5, base(eval__select="last"))
    job(tmp_path / "configs", "best", 0.4, base(eval__select="best"))
    assert rows(tmp_path / "configs") == {"maml + uniform (eval.select=best)": "0.4000 ± 0.010",
                                          "maml + uniform (eval.select=last)": "0.5000 ± 0.010"}
    for select, mean in (("last", 0.5), ("best", 0.4)):  # results.json alone: its `select` field tells them apart
        (tmp_path / "records" / select).mkdir(parents=True)
        write_results(tmp_path / "records" / select, record("maml", "uniform", mean) | {"select": select})
    assert rows(tmp_path / "records") == {"maml + uniform (select=best)": "0.4000 ± 0.010",
                                          "maml + uniform (select=last)": "0.5000 ± 0.010"}


@pytest.mark.parametrize("metric", ["mse", "accuracy"])
def test_one_run_table_without_pandas_is_the_table_metarun_table_prints(tmp_path, metric):
    run = record("reptile", "agreement", 0.81234) | {"metric": metric, "ci95": 0.0123}
    write_results(tmp_path, run)
    assert run_table(run) == build_table(load_runs([tmp_path])).to_markdown()


@pytest.mark.parametrize("option", options("data"))
def test_the_kind_of_each_dataset_is_told_without_its_class_as_its_class_says(option):
    from hydra.utils import get_class

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"data={option}"])
    source = get_class(cfg.data._target_)
    assert task_kind(cfg.data) == (source.kind, source.metric)


def test_a_group_choice_that_some_runs_do_not_record_does_not_name_them():
    """A metarun-eval folder records no group choices (`model: mlp`): runs are named by their keys instead."""
    from metarun.report.results import varying

    trained = {"model": "mlp", "model.hidden": "[64,64]", "eval.steps": 5, "seed": 0}
    evaluated = {"model.hidden": "[64,64]", "eval.steps": 32, "seed": 0}
    assert varying([trained, evaluated]) == ["eval.steps"]
    assert varying([trained, {**trained, "model": "mlp_small", "model.hidden": "[8]"}]) == ["model"]
