"""exec.workers: tasks shared among worker processes give the in-process meta-gradients, and a run
with workers writes the results of the same run without them."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metarun.build import build, check_execution
from metarun.cli import config_dir
from metarun.config import ConfigError, register
from metarun.execution import task_grads
from metarun.functional import detached
from metarun.train import run
from metarun.workers import TaskPool

register()


def config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=["device=cpu", "train.meta_batch=5", *overrides])


# Reptile with Adam: its inner optimiser is a closure, so the workers must rebuild it, not receive it.
@pytest.mark.parametrize("algo", ["algo=maml", "algo=reptile algo.inner_optimizer=adam"])
def test_workers_give_the_in_process_task_grads(algo):
    cfg = config(*algo.split(), "exec.mode=loop")
    parts = build(cfg)
    source, model, algorithm, objective = parts.source, parts.model, parts.algo, parts.objective
    episode = source.sample("train", 5, cfg.ways, cfg.shots, cfg.queries, torch.Generator().manual_seed(0))
    with TaskPool(OmegaConf.to_container(cfg, resolve=True), workers=2) as pool:
        for dtype, tol in ((torch.float32, {"rtol": 1e-5, "atol": 1e-7}), (torch.float64, {"rtol": 1e-10, "atol": 0})):
            theta = {k: v.to(dtype) for k, v in detached(model).items()}
            batch = type(episode)(*(t.to(dtype) for t in episode))
            ref = task_grads(algorithm, theta, objective, batch, cfg.exec.mode, diagnose=True)
            out = pool(theta, batch, True, 1)
            for field in ("meta_grads", "updates", "metrics"):
                assert getattr(out, field).keys() == getattr(ref, field).keys()
                for k, v in getattr(ref, field).items():
                    assert getattr(out, field)[k].dtype == dtype
                    torch.testing.assert_close(getattr(out, field)[k], v, **tol)


def test_a_run_with_workers_writes_the_same_results(tmp_path):
    overrides = ["train.iterations=6", "train.eval_every=3", "eval.tasks=20", "eval.val_tasks=10", "exec.mode=loop"]
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        record, _ = run(config(*overrides, f"exec.workers={workers}"), out)
        runs[workers] = record
    timing = {"train_seconds", "eval_seconds", "seconds", "config", "exec_workers"}
    a, b = ({k: v for k, v in r.items() if k not in timing} for r in (runs[0], runs[2]))
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float):
            assert b[k] == pytest.approx(a[k], rel=1e-4), k
        else:
            assert b[k] == a[k], k
    assert json.loads((tmp_path / "w2" / "results.json").read_text())["n_tasks"] == 20


def test_workers_are_refused_on_a_gpu():
    with pytest.raises(ConfigError, match=r"exec.workers=2.*exec.workers=0"):
        check_execution(config("exec.workers=2"), torch.device("cuda"))


def test_a_worker_killed_mid_run_is_an_error_not_a_hang():
    import os
    import signal

    from metarun.workers import WorkerDied

    cfg = config("algo=fomaml", "exec.mode=loop")
    parts = build(cfg)
    source, model = parts.source, parts.model
    episode = source.sample("train", 5, cfg.ways, cfg.shots, cfg.queries, torch.Generator().manual_seed(0))
    with TaskPool(OmegaConf.to_container(cfg, resolve=True), workers=2) as pool:
        pool(detached(model), episode, False, 1)
        pid, process = next(iter(pool.pool._processes.items()))
        os.kill(pid, signal.SIGKILL)
        process.join()
        # The executor learns of the death asynchronously: a batch may still finish on the survivor
        # first, but one of the next few must fail with the message rather than wait forever.
        with pytest.raises(WorkerDied, match=r"exec.workers=2.*same command"):
            for _ in range(20):
                pool(detached(model), episode, False, 1)
