"""`eval.select=best`: the final test takes the parameters of the best validation mean (best.pt)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

import metarun
from test_learner import scores_csv

# Sine, seed 0: validation MSE 3.44, 3.18, 3.08, 3.15 at iterations 10..40, so the best is not the last.
RUN = ["train.iterations=40", "train.eval_every=10", "eval.val_tasks=20", "eval.tasks=30", "outer.lr=0.01",
       "train.meta_batch=5", "device=cpu", "exec.mode=loop"]


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def validations(folder: Path) -> dict[int, float]:
    with open(folder / "metrics.csv") as f:
        return {int(r["iteration"]): float(r["val_mean"]) for r in csv.DictReader(f) if r["val_mean"]}


def finished(forker, folder: Path, *overrides: str) -> Path:
    out = forker.run(*RUN, *overrides, f"hydra.run.dir={folder}")
    assert out.returncode == 0, out.stderr
    return folder


@pytest.fixture(scope="module")
def best_run(forker, tmp_path_factory):
    return finished(forker, tmp_path_factory.mktemp("select") / "best", "eval.select=best")


def test_best_tests_the_parameters_of_the_best_validation(best_run, one_thread):
    # The exact equality below holds with the run's thread count (one, as the `forker` runs).
    vals = validations(best_run)
    iteration = min(vals, key=vals.get)  # MSE: lower is better
    assert iteration != 40, vals  # the setting tells best from last
    record, best = results(best_run), torch.load(best_run / "best.pt", weights_only=False)
    assert (record["select"], record["tested_iteration"], best["iteration"]) == ("best", iteration, iteration)
    assert record["tested_val_mean"] == best["val_mean"] == vals[iteration]
    learner = metarun.load(best_run, device="cpu")  # the run's own choice: best.pt
    assert learner.iteration == iteration
    assert learner.evaluate(learner.test_stream()).tolist() == scores_csv(best_run)
    last = metarun.load(best_run, device="cpu", select="last")
    assert last.iteration == 40 and last.evaluate(last.test_stream()).tolist() != scores_csv(best_run)


def test_last_writes_no_best_pt_and_tests_the_last_iteration(forker, tmp_path, best_run):
    folder = finished(forker, tmp_path / "last")
    record = results(folder)
    assert not (folder / "best.pt").exists()
    assert (record["select"], record["tested_iteration"]) == ("last", 40)
    assert record["tested_val_mean"] == validations(folder)[40]
    assert validations(folder) == validations(best_run)  # the choice changes what is tested, not the training


@pytest.mark.slow
@pytest.mark.parametrize("after", [False, True], ids=["before-best-pt-lands", "after-best-pt-lands"])
def test_killed_at_a_new_best_resumes_to_the_same_test(forker, tmp_path, best_run, after):
    folder = tmp_path / "killed"
    # The third best.pt (iteration 30): the checkpoint of iteration 30 is not written yet.
    out = forker.run(*RUN, "eval.select=best", f"hydra.run.dir={folder}",
                     patch=("kill_at_replace", {"name": "best.pt", "call": 3, "after": after}))
    assert out.returncode == -9, out.stderr
    assert torch.load(folder / "best.pt", weights_only=False)["iteration"] == (30 if after else 20)
    finished(forker, folder, "eval.select=best")
    assert results(folder)["tested_iteration"] == results(best_run)["tested_iteration"]
    assert results(folder)["mean"] == results(best_run)["mean"]
    assert scores_csv(folder) == scores_csv(best_run)
    again, first = (torch.load(f / "best.pt", weights_only=False) for f in (folder, best_run))
    assert again["iteration"] == first["iteration"]
    assert all(torch.equal(again["params"][k], first["params"][k]) for k in first["params"])


@pytest.mark.slow
def test_killed_after_the_best_the_resumed_run_keeps_tracking_it(forker, tmp_path, best_run):
    folder = tmp_path / "killed"
    # Before iteration 40's checkpoint lands: the run continues from iteration 30's, which must remember that 30
    # was the best, or iteration 40's worse validation would count as a first best and be tested.
    out = forker.run(*RUN, "eval.select=best", f"hydra.run.dir={folder}",
                     patch=("kill_at_replace", {"name": "checkpoint.pt", "call": 4, "after": False}))
    assert out.returncode == -9, out.stderr
    vals = validations(best_run)
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["best"] == {"iteration": 30, "val_mean": vals[30]}
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    finished(forker, folder, "eval.select=best")
    record = results(folder)
    assert (record["resumed_from"], record["tested_iteration"], record["tested_val_mean"]) == (30, 30, vals[30])
    assert record["mean"] == results(best_run)["mean"] and scores_csv(folder) == scores_csv(best_run)

    (damaged / "best.pt").unlink()  # the parameters the run would test are gone: no test of others in their place
    out = forker.run(*RUN, "eval.select=best", f"hydra.run.dir={damaged}")
    assert out.returncode != 0 and "best.pt is missing" in out.stderr and "iteration 30" in out.stderr, out.stderr
    assert not (damaged / "results.json").exists()
