"""Loop options of the faithful presets: a carried inner Adam survives a kill and resume, the outer step decay
and the meta-gradient clipping do what the config says. Runs are forked (tests/forkrun.py): seconds in all."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from metarun.models import MLP

TINY = ["train.iterations=6", "train.meta_batch=3", "train.eval_every=0", "eval.tasks=8", "eval.val_tasks=0",
        "device=cpu"]
CARRY = ["algo=reptile", "algo.inner_optimizer=adam", "algo.inner_state=carry", "inner.lr=0.01",
         "inner.sub_batches=2", "train.checkpoint_every=3"]
TIMINGS = {"seconds", "train_seconds", "resumed_from"}


def results(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "results.json").read_text()).items() if k not in TIMINGS}


def test_carried_adam_state_is_checkpointed_and_restored(forker, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert forker.run(*TINY, *CARRY, f"hydra.run.dir={whole}").returncode == 0
    killed = forker.run(*TINY, *CARRY, f"hydra.run.dir={cut}", patch=("kill_at_sample", {"split": "train", "call": 5}))
    assert killed.returncode == -9
    saved = torch.load(cut / "checkpoint.pt", weights_only=False)
    assert saved["iteration"] == 3 and saved["algo"]["adam_t"] == 3 * 3 * 5  # iterations x tasks x inner steps
    resumed = forker.run(*TINY, *CARRY, f"hydra.run.dir={cut}")
    assert resumed.returncode == 0, resumed.stderr
    assert results(cut) == results(whole)
    assert (cut / "scores.csv").read_text() == (whole / "scores.csv").read_text()


def test_step_decay_and_meta_gradient_clipping(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*TINY[:1], "train.iterations=5", *TINY[1:], "algo=reptile", "outer.decay=0.5",
                     "outer.decay_every=2", "outer.clip_value=1e-4", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr
    with open(run_dir / "metrics.csv", newline="") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    # Reptile's annealing (1 - it/5) times 0.5 ** (it // 2), for it = 0..4.
    assert lrs == pytest.approx([1.0, 0.8, 0.3, 0.2, 0.05])
    torch.manual_seed(0)  # the run's initialisation (seed=0)
    start = dict(MLP(1, [64, 64], 1).named_parameters())
    end = torch.load(run_dir / "checkpoint.pt", weights_only=False)["params"]
    moved = max((end[k] - start[k].detach()).abs().max().item() for k in end)
    assert 0 < moved <= sum(lrs) * 1e-4 * 1.001  # every step clipped to 1e-4 per coordinate (float32 round-off)
