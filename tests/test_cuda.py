"""On a CUDA GPU: short real runs of every algorithm and weighting, execution modes equal in float64,
resuming, and the CPU-only settings refused. Marked `cuda`: without a GPU they are skipped, with the
reason (`pytest -rs` shows it); `python -m pytest -m cuda` runs only these, and scripts/gpu_check.py runs
them first. The Omniglot cases read the real archives from ../shared/data/omniglot (or
$METARUN_DATA/omniglot) and are skipped, saying so, where there are none.

METARUN_CUDA_TESTS_DEVICE=cpu rehearses them on the CPU (scripts/gpu_check.py --dry-run does, for a few),
so that their own code has run before the first GPU they meet, which may come once."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metarun.config.checks import ALGORITHMS, WEIGHTINGS
from metarun.config.store import config_dir, register
from metarun.core import precision
from metarun.run.execution import task_grads
from metarun.run.signals import Interrupted
from metarun.run.train import run

pytestmark = pytest.mark.cuda
register()
DEVICE = os.environ.get("METARUN_CUDA_TESTS_DEVICE", "cuda")
# On a GPU `exec.mode=auto` is vmap; a rehearsal on the CPU asks for it.
MODE = [] if DEVICE == "cuda" else ["exec.mode=vmap"]

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT = Path(os.environ["METARUN_DATA"]) / "omniglot" if os.environ.get("METARUN_DATA") else \
    ROOT.parent / "shared" / "data" / "omniglot"
SHORT = [f"device={DEVICE}", *MODE, "train.iterations=3", "train.meta_batch=4", "train.eval_every=2",
         "train.checkpoint_every=0", "eval.tasks=8", "eval.val_tasks=4", "eval.chunk=4"]
DATA = {"sine": ["data=sine"],
        "omniglot": ["data=omniglot", f"data.root={OMNIGLOT}", "train.queries=5", "queries=5"]}
TIMINGS = {"seconds", "train_seconds", "resumed_from"}


def config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def needs(data: str) -> None:
    if data == "omniglot" and not (OMNIGLOT / "images_background.zip").is_file():
        pytest.skip(f"the Omniglot archives are not in {OMNIGLOT} (set METARUN_DATA to the folder holding omniglot/)")


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_three_iterations_on_cuda(tmp_path, algo, weighting, data):
    needs(data)
    record, _ = run(config(*SHORT, *DATA[data], f"algo={algo}", f"weighting={weighting}"), tmp_path)
    assert record["device"] == DEVICE and record["exec_mode"] == "vmap" and record["exec_chunk"] == 4
    assert record["tf32"] is False and math.isfinite(record["mean"]) and record["n_tasks"] == 8
    assert json.loads((tmp_path / "results.json").read_text())["mean"] == record["mean"]


@pytest.mark.parametrize("data", DATA)
def test_bf16_autocast_and_tf32_runs_on_cuda(tmp_path, data):
    needs(data)
    record, _ = run(config(*SHORT, *DATA[data], "exec.autocast=bf16", "exec.tf32=true"), tmp_path)
    assert math.isfinite(record["mean"]) and record["autocast"] == "bf16"
    assert record["tf32"] is (DEVICE == "cuda" and torch.cuda.get_device_capability() >= (8, 0))


@pytest.mark.parametrize("name", ["maml", "imaml", "cavia"])
def test_vmap_equals_loop_on_cuda_float64(name):
    from test_execution import ALGOS, problem

    theta, loss, episode = problem(torch.float64, name)
    device = torch.device(DEVICE)
    theta = {k: v.to(device) for k, v in theta.items()}  # the module only lends its structure to functional_call
    episode = episode.to(device)
    precision.use_tf32(False, device)
    algo = ALGOS[name]()
    ref = task_grads(algo, theta, loss, episode, "loop")
    out = task_grads(algo, theta, loss, episode, "vmap")
    for field in ("meta_grads", "updates", "metrics"):
        for k, v in getattr(ref, field).items():
            assert getattr(out, field)[k].device.type == DEVICE
            torch.testing.assert_close(getattr(out, field)[k], v, rtol=1e-10, atol=1e-12)


def test_resume_on_cuda_gives_the_uninterrupted_results(tmp_path, monkeypatch):
    from metarun.data.sine import SineWaves

    overrides = [*SHORT, "train.iterations=8", "train.eval_every=4", "train.checkpoint_every=2", "algo=fomaml",
                 "weighting=agreement"]
    for name in ("whole", "resumed"):
        (tmp_path / name).mkdir()
    whole, _ = run(config(*overrides), tmp_path / "whole")
    real, calls = SineWaves.sample, []

    def sample(self, split, *args, **kwargs):  # SIGUSR1 (Slurm's preemption notice) during iteration 3
        if split == "train":
            calls.append(split)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGUSR1)
        return real(self, split, *args, **kwargs)

    monkeypatch.setattr(SineWaves, "sample", sample)
    with pytest.raises(Interrupted):
        run(config(*overrides), tmp_path / "resumed")
    monkeypatch.undo()
    resumed, _ = run(config(*overrides), tmp_path / "resumed")
    assert resumed["resumed_from"] == 3
    assert {k: v for k, v in whole.items() if k not in TIMINGS} == \
        {k: v for k, v in resumed.items() if k not in TIMINGS}
