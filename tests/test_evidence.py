"""The result files committed under docs/results/ are the evidence behind numbers the docs print: a page cannot
drift from them, and they cannot drift from themselves (a mean or CI edited by hand, a scores file cut short)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import scipy.stats
import yaml

from conftest import ROOT
from metarun.report.results import ci95
from metarun.run import provenance

EVIDENCE = ROOT / "docs" / "results"
RECORDS = sorted(EVIDENCE.rglob("results.json"))


def scores(folder: Path, column: str = "score") -> list[float]:
    with open(folder / "scores.csv", newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def differing_keys(one: dict, other: dict) -> set[str]:
    """The top-level config groups whose values differ between two runs' configs."""
    return {k for k in one.keys() | other.keys() if one.get(k) != other.get(k)}


def test_there_is_evidence_to_check():
    assert len(RECORDS) >= 14, RECORDS  # ga_sine: 2 cells x 3 seeds, each re-tested with 32 steps; ga_omniglot: 2


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: str(p.parent.relative_to(EVIDENCE)))
def test_mean_and_ci_recomputed_from_the_scores_equal_the_record(record):
    saved = json.loads(record.read_text())
    after, before = scores(record.parent), scores(record.parent, "score_before")
    assert len(after) == saved["n_tasks"]
    # The same function on the same numbers: equal to the last bit.
    assert ci95(after) == (saved["mean"], saved["ci95"]) and saved["ci95_method"] == "t"
    assert ci95(before)[0] == saved["mean_before"]


def test_ga_sine_runs_are_the_full_budget_and_differ_only_in_the_weighting():
    folder = EVIDENCE / "ga_sine"
    for seed in (0, 1, 2):
        configs = {cell: yaml.safe_load((folder / cell / f"seed={seed}" / "config.yaml").read_text())
                   for cell in ("reptile", "ga_reptile")}
        for cell, config in configs.items():
            record = json.loads((folder / cell / f"seed={seed}" / "results.json").read_text())
            assert (record["iterations"], record["n_tasks"], record["seed"]) == (30000, 1000, seed)
            assert config["train"]["iterations"] == 30000 and config["seed"] == seed
            assert json.loads((folder / cell / f"seed={seed}" / "eval" / "eval.steps=32" / "results.json")
                              .read_text())["eval_steps"] == 32
        differ = differing_keys(configs["reptile"], configs["ga_reptile"])
        assert differ == {"weighting"}, differ
        assert configs["ga_reptile"]["weighting"]["name"] == "agreement"
        assert configs["reptile"]["weighting"]["name"] == "uniform"


GA_OMNIGLOT = EVIDENCE / "ga_omniglot_5w1s"
GA_OMNIGLOT_PAGE = EVIDENCE / "ga_omniglot.md"


def test_ga_omniglot_cells_are_the_full_budget_and_differ_only_in_the_weighting():
    configs, records = {}, {}
    for cell in ("reptile_5w1s", "ga_5w1s"):
        configs[cell] = yaml.safe_load((GA_OMNIGLOT / cell / ".hydra" / "config.yaml").read_text())
        records[cell] = json.loads((GA_OMNIGLOT / cell / "results.json").read_text())
        assert (records[cell]["iterations"], records[cell]["tested_iteration"]) == (100000, 100000)
        assert (records[cell]["n_tasks"], records[cell]["ways"], records[cell]["shots"]) == (10000, 5, 1)
        assert configs[cell]["train"]["iterations"] == 100000 and configs[cell]["eval"]["tasks"] == 10000
        # metrics.csv is the whole log: every 10th iteration to the last, validation every 5,000.
        with open(GA_OMNIGLOT / cell / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["iteration"]) for r in rows] == list(range(10, 100001, 10))
        assert [int(r["iteration"]) for r in rows if r["val_mean"]] == list(range(5000, 100001, 5000))
    differ = differing_keys(configs["reptile_5w1s"], configs["ga_5w1s"])
    assert differ == {"weighting"}, differ
    assert (records["reptile_5w1s"]["weighting"], records["ga_5w1s"]["weighting"]) == ("uniform", "agreement")


def test_ga_omniglot_page_prints_what_the_files_hold():
    """The page's accuracies and its paired difference are the committed scores' (percent, two decimals)."""
    page = GA_OMNIGLOT_PAGE.read_text()
    for cell in ("reptile_5w1s", "ga_5w1s"):
        record = json.loads((GA_OMNIGLOT / cell / "results.json").read_text())
        assert f"{100 * record['mean']:.2f} ± {100 * record['ci95']:.2f}" in page, cell
    a, b = scores(GA_OMNIGLOT / "ga_5w1s"), scores(GA_OMNIGLOT / "reptile_5w1s")
    diff = 100 * (sum(a) - sum(b)) / len(a)
    low, high = scipy.stats.ttest_rel(a, b).confidence_interval()
    assert f"{diff:+.2f} points (95% CI {100 * low:+.2f} to {100 * high:+.2f})" in page
    # The commit the runs came from is named, and (in a clone with its history) it is this repository's.
    assert "commit 3c88d4e" in page
    # A shallow clone lacks older commits, so a commit missing from it proves nothing.
    if provenance.git(ROOT, "rev-parse", "--is-shallow-repository") == "false\n":
        assert provenance.git(ROOT, "cat-file", "-e", "3c88d4e^{commit}") is not None
