"""Faults: a run killed with SIGKILL at twelve different moments and started again ends with exactly the results
of a run that was never stopped, and no checkpoint is ever left unreadable; a full disk while checkpointing
keeps the previous checkpoint; a multirun in which one job raises writes every other job's results.

Each run is a forked process (tests/forkrun.py) that patches one function to kill itself at the chosen
moment, so the moments are exact, not timing-dependent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

RUN = ["train.iterations=12", "train.meta_batch=2", "train.eval_every=4", "train.checkpoint_every=3",
       "eval.tasks=8", "eval.val_tasks=4", "eval.chunk=4", "weighting=agreement", "device=cpu"]
# Checkpoints are written after iterations 3, 4 (validation), 6, 8 (validation), 9 and 12 (the end);
# the test tasks come in two chunks of 4.
TIMINGS = {"seconds", "train_seconds", "resumed_from"}
RUN_FILES = ("checkpoint.pt", "metrics.csv", "scores.csv", "results.json")


def command(run_dir: Path) -> list[str]:
    return [*RUN, f"hydra.run.dir={run_dir}"]


def results(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "results.json").read_text()).items() if k not in TIMINGS}


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def checkpoint_iteration(run_dir: Path) -> int | None:
    """The checkpoint's iteration; loading it fully proves it is readable."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert all(torch.isfinite(p).all() for p in state["params"].values())
    return state["iteration"]


@pytest.fixture(scope="module")
def reference(forker, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    out = forker.run(*command(run_dir))
    assert out.returncode == 0, out.stderr
    return run_dir


MOMENTS = [  # (patch, the checkpoint's iteration when killed)
    pytest.param(("kill_at_sample", {"split": "train", "call": 2}), None, id="training-before-any-checkpoint"),
    pytest.param(("kill_at_sample", {"split": "train", "call": 11}), 9, id="training-between-checkpoints"),
    pytest.param(("kill_at_step", {"call": 5}), 4, id="outer-optimiser-step"),
    pytest.param(("kill_at_log_row", {"call": 7}), 6, id="metrics-row-write"),
    pytest.param(("kill_mid_write", {"name": "checkpoint.pt", "call": 2}), 3, id="checkpoint-half-written"),
    pytest.param(("kill_at_replace", {"name": "checkpoint.pt", "call": 3, "after": False}), 4,
                 id="checkpoint-synced-not-renamed"),
    pytest.param(("kill_at_replace", {"name": "checkpoint.pt", "call": 4, "after": True}), 8,
                 id="checkpoint-just-renamed"),
    pytest.param(("kill_at_sample", {"split": "val", "call": 2}), 6, id="validation"),
    pytest.param(("kill_at_sample", {"split": "test", "call": 2}), 12, id="final-evaluation"),
    pytest.param(("kill_mid_write", {"name": "scores.csv", "call": 1}), 12, id="scores-half-written"),
    pytest.param(("kill_mid_write", {"name": "results.json", "call": 1}), 12, id="results-half-written"),
    pytest.param(("kill_at_replace", {"name": "results.json", "call": 1, "after": True}), 12,
                 id="results-renamed-before-exit"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("patch", "saved"), MOMENTS)
def test_killed_and_resumed_equals_uninterrupted(forker, tmp_path, reference, patch, saved):
    run_dir = tmp_path / "run"
    killed = forker.run(*command(run_dir), patch=patch)
    assert killed.returncode == -9, killed.stderr

    # What the kill left: a readable checkpoint (or none yet), and no half of any other file.
    assert checkpoint_iteration(run_dir) == saved
    finished = patch[0] == "kill_at_replace" and patch[1]["name"] == "results.json"
    assert (run_dir / "results.json").exists() == finished
    if finished:
        assert results(run_dir) == results(reference)
    if (run_dir / "scores.csv").exists():
        assert (run_dir / "scores.csv").read_text() == (reference / "scores.csv").read_text()

    resumed = forker.run(*command(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert results(run_dir) == results(reference)
    assert (run_dir / "scores.csv").read_text() == (reference / "scores.csv").read_text()
    assert rows(run_dir) == rows(reference)  # every iteration logged once, with the same numbers
    record = json.loads((run_dir / "results.json").read_text())
    assert record["resumed_from"] == (None if finished else saved)
    assert checkpoint_iteration(run_dir) == 12
    assert not list(run_dir.glob(".*.tmp"))  # the temporary file a kill left was removed on resuming


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(forker, tmp_path, reference):
    run_dir = tmp_path / "run"
    out = forker.run(*command(run_dir), patch=("disk_full", {"name": "checkpoint.pt", "call": 2}))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    message = out.error()
    for phrase in (f"cannot write {run_dir / 'checkpoint.pt'} (No space left on device)",
                   "The disk is full: free space on it, or choose an output folder on another disk with "
                   "`hydra.run.dir=...`", f"{run_dir / 'checkpoint.pt'} (iteration 3) is intact, and `metarun --resume "
                   f"{run_dir}` continues from it"):
        assert phrase in message, message
    assert checkpoint_iteration(run_dir) == 3
    assert not list(run_dir.glob(".*.tmp"))
    assert not (run_dir / "results.json").exists() and not (run_dir / "scores.csv").exists()

    # Once there is space again, the same command loses nothing.
    resumed = forker.run(*command(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert results(run_dir) == results(reference) and rows(run_dir) == rows(reference)


def test_a_job_that_raises_leaves_the_others_and_is_marked(forker, tmp_path):
    sweep = tmp_path / "sweep"
    out = forker.run("-m", "seed=0,1,2", "train.iterations=3", "train.meta_batch=2", "train.eval_every=0",
                     "eval.tasks=4", "eval.val_tasks=0", "device=cpu", f"hydra.sweep.dir={sweep}",
                     patch=("raise_in_job", {"seed": 1}))
    assert out.returncode == 1
    assert "RuntimeError: simulated bug in the job with seed=1" in out.stderr  # the job's own traceback
    (failed,) = sweep.glob("*seed=1*")
    summary = [line for line in out.stderr.splitlines() if line.strip()][-1]
    assert summary.startswith(f"metarun: error: 1 of the 3 jobs of this multirun failed ({failed.name}; the first: "
                              "RuntimeError: simulated bug in the job with seed=1)"), summary
    assert f"`metarun-table {sweep}` marks the failed cells" in summary

    assert all((job / "results.json").is_file() for seed in (0, 2) for job in sweep.glob(f"*seed={seed}*"))
    failure = json.loads((failed / "failed.json").read_text())
    assert failure["error"] == "RuntimeError: simulated bug in the job with seed=1" and failure["exit_code"] == 1
    assert not (failed / "results.json").exists()

    table = forker.run(str(sweep), entry="table")
    assert table.returncode == 0, table.stderr
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.stdout.splitlines()
             if "(seed" in line}
    assert cells["maml + uniform (seed=1)"] == "failed"
    assert all("±" in cells[f"maml + uniform (seed={s})"] for s in (0, 2))


CTRL_C = [  # (second Ctrl-C, where the run stops, the checkpoint it leaves); the first comes at iteration 5's batch
    pytest.param(None, "stopped by Ctrl-C (SIGINT) after iteration 5; its checkpoint is saved. To continue: ", 5,
                 id="once"),
    pytest.param("now", "stopped at once by Ctrl-C. No results were written; ", 4, id="twice"),
    pytest.param("checkpoint", "stopped at once by Ctrl-C. No results were written; ", 4,
                 id="twice-the-second-while-checkpointing"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("again", "said", "saved"), CTRL_C)
def test_ctrl_c_checkpoints_and_a_second_one_stops_at_once(forker, tmp_path, reference, again, said, saved):
    run_dir = tmp_path / "run"
    out = forker.run(*command(run_dir), patch=("ctrl_c", {"call": 5, "again": again}))
    assert out.returncode == 130 and "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"metarun: {said}"), out.stderr
    assert lines[0].endswith(f"metarun --resume {run_dir}" if again is None else
                             f"checkpoint.pt (iteration {saved}) is intact, and `metarun --resume {run_dir}` "
                             "continues from it."), lines[0]
    # Nothing half-written: the checkpoint reads, no temporary file is left, no results.
    assert checkpoint_iteration(run_dir) == saved
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "results.json").exists()

    resumed = forker.run("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert results(run_dir) == results(reference) and rows(run_dir) == rows(reference)
    assert json.loads((run_dir / "results.json").read_text())["resumed_from"] == saved
