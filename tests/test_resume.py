"""Resumable runs: a run stopped by SIGTERM or SIGUSR1 (Slurm's preemption signal) or Ctrl-C (SIGINT)
checkpoints, and started again in its folder (the same command, or `metarun --resume DIR`), ends with the
results of a run that was never stopped."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

# Long enough to stop in the middle of (the signal comes at iteration 10, within one iteration of it), short
# enough to run four times: a validation before and after the stop, checkpoints every 7 iterations.
ITERATIONS = 60
SETTINGS = [f"train.iterations={ITERATIONS}", "train.meta_batch=4", "train.eval_every=25", "train.checkpoint_every=7",
            "eval.tasks=20", "eval.val_tasks=10", "algo=fomaml", "weighting=agreement", "device=cpu"]
TIMINGS = {"seconds", "train_seconds", "resumed_from"}


def command(run_dir) -> list[str]:
    return [sys.executable, "-m", "metarun", *SETTINGS, f"hydra.run.dir={run_dir}"]


def iterations_logged(run_dir) -> int:
    try:
        with open(run_dir / "metrics.csv") as f:
            return max((int(r["iteration"]) for r in csv.DictReader(f)), default=0)
    except (OSError, ValueError):
        return 0


def rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    done = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, uninterrupted, signum):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(command(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while iterations_logged(run_dir) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert not (run_dir / "results.json").exists()
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"]
    assert 10 <= stopped_at < ITERATIONS
    # The last line says where it stopped and the exact command that continues it.
    said = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signum.name
    assert err.splitlines()[-1] == (f"metarun: stopped by {said} "
                                    f"after iteration {stopped_at}; its checkpoint is saved. To continue: metarun "
                                    f"--resume {run_dir}"), err
    if signum == signal.SIGINT:  # Ctrl-C: exit code 130, no traceback; the others: the signal's own effect
        assert proc.returncode == 130 and "Traceback" not in err, err
        resume = [sys.executable, "-m", "metarun", "--resume", str(run_dir)]  # the command the line printed
    else:
        assert proc.returncode == -signum, err
        resume = command(run_dir)

    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((uninterrupted / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["resumed_from"] == stopped_at
    assert {k: v for k, v in a.items() if k not in TIMINGS} == {k: v for k, v in b.items() if k not in TIMINGS}
    assert (uninterrupted / "scores.csv").read_text() == (run_dir / "scores.csv").read_text()
    assert rows(uninterrupted) == rows(run_dir)  # each iteration logged once, with the same numbers


# A checkpoint of another config, or a corrupt one, is refused: tests/test_bad_inputs.py.
