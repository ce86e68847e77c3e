"""The result files committed under docs/results/ are the evidence behind numbers the docs print: a page cannot
drift from them, and they cannot drift from themselves (a mean or CI edited by hand, a scores file cut short)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from metarun.report.results import ci95

EVIDENCE = ROOT / "docs" / "results"
RECORDS = sorted(EVIDENCE.rglob("results.json"))


def scores(folder: Path, column: str = "score") -> list[float]:
    with open(folder / "scores.csv", newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def test_there_is_evidence_to_check():
    assert len(RECORDS) >= 12, RECORDS  # ga_sine: 2 cells x 3 seeds, each re-tested with 32 steps


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
        differ = {k for k in configs["reptile"].keys() | configs["ga_reptile"].keys()
                  if configs["reptile"].get(k) != configs["ga_reptile"].get(k)}
        assert differ == {"weighting"}, differ
        assert configs["ga_reptile"]["weighting"]["name"] == "agreement"
        assert configs["reptile"]["weighting"]["name"] == "uniform"
