"""Resumable runs: a run stopped by SIGTERM or SIGUSR1 (Slurm's preemption signal) checkpoints,
and started again in its folder, ends with the results of a run that was never stopped."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

SETTINGS = ["train.iterations=150", "train.meta_batch=4", "train.eval_every=50", "train.checkpoint_every=7",
            "eval.tasks=50", "eval.val_tasks=10", "algo=fomaml", "weighting=agreement", "device=cpu"]
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, uninterrupted, signum):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(command(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while iterations_logged(run_dir) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signum, err  # the signal's own effect, after the checkpoint
    assert "continue" in err and not (run_dir / "results.json").exists()
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"]
    assert 10 <= stopped_at < 150

    resumed = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((uninterrupted / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["resumed_from"] == stopped_at
    assert {k: v for k, v in a.items() if k not in TIMINGS} == {k: v for k, v in b.items() if k not in TIMINGS}
    assert (uninterrupted / "scores.csv").read_text() == (run_dir / "scores.csv").read_text()
    assert rows(uninterrupted) == rows(run_dir)  # each iteration logged once, with the same numbers


def test_a_checkpoint_from_another_config_is_refused(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((uninterrupted / "checkpoint.pt").read_bytes())
    other = subprocess.run([*command(run_dir), "inner.lr=0.02"], capture_output=True, text=True, timeout=300)
    assert other.returncode == 2
    assert "different config (eval.lr, inner.lr differ)" in other.stderr and "Traceback" not in other.stderr
    assert not (run_dir / "results.json").exists() and (run_dir / "checkpoint.pt").is_file()


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    out = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "cannot be read as a metarun checkpoint" in out.stderr
