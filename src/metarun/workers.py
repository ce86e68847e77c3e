"""The tasks of a meta-batch shared among worker processes, each running whole tasks on its own cores.

On a CPU one task's convolutions are too small to keep several cores busy through intra-op
threads, and torch.func's transforms cannot run in several threads of one process. So with
`exec.workers=N`, N processes each compute the TaskGrads of a contiguous share of the tasks,
with the same code as in-process execution, and the shares are concatenated in task order:
the weighting and the optimiser step stay in the training loop.
"""

from __future__ import annotations

import ctypes
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from metarun.algorithms import TaskGrads
from metarun.functional import Params
from metarun.tasks import Episode

_parts: dict[str, Any] = {}  # per worker process: what _init built from the run's config


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class WorkerDied(RuntimeError):
    """A worker process ended in the middle of a meta-batch (killed, or out of memory)."""


class TaskPool:
    """`workers` processes that compute TaskGrads for shares of each meta-batch (CPU only)."""

    def __init__(self, config: dict, workers: int, need_loss: bool = False) -> None:
        threads = max(1, cores() // workers)
        # spawn, not fork: a child forked after torch has started its thread pools can hang.
        self.pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_init,
                                        initargs=(config, threads, need_loss))
        self.workers = workers

    def __call__(self, theta: Params, episode: Episode, diagnose: bool, iteration: int) -> TaskGrads:
        n = len(episode)
        bounds = [n * i // self.workers for i in range(self.workers + 1)]
        shares = [type(episode)(*(t[a:b] for t in episode)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
                  if b > a]
        try:
            parts = list(self.pool.map(_share, [theta] * len(shares), shares, [diagnose] * len(shares),
                                       [iteration] * len(shares)))
        except BrokenProcessPool:
            # Unlike multiprocessing.Pool, which waits forever for a task whose worker died.
            raise WorkerDied(
                f"one of the {self.workers} worker processes (`exec.workers={self.workers}`) died during a "
                "meta-batch, most likely killed for lack of memory. Run the same command again with fewer "
                "workers, or `exec.workers=0`: it continues from the last checkpoint."
            ) from None
        return TaskGrads(*({k: torch.cat([p[j][k] for p in parts]) for k in parts[0][j]} for j in range(3)))

    def close(self) -> None:
        # Workers ignore SIGTERM (see _init), so the executor's own terminate() would wait for them
        # forever; they hold no state, so they are killed. `_processes` is the executor's only handle.
        processes = list((self.pool._processes or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join()

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _init(config: dict, threads: int, need_loss: bool) -> None:
    _die_with_parent()
    # The training process handles stop requests and checkpoints; workers just stop when it does.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    torch.set_num_threads(threads)
    from metarun.build import build  # the run's own parts, without its data: the episodes come with each share

    _parts.update(parts=build(OmegaConf.create(config), data=False), need_loss=need_loss)


def _share(theta: Params, episode: Episode, diagnose: bool, iteration: int) -> TaskGrads:
    parts = _parts["parts"]
    parts.algo.progress(iteration)
    return parts.executor.task_grads(parts.algo, theta, parts.objective, episode, diagnose, _parts["need_loss"])


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the training process dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the pool's own shutdown still ends the workers
