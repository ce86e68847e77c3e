"""How the tasks of a batch are computed, for training and evaluation alike: a Python loop over tasks or
`torch.func.vmap` over them, in chunks of tasks per vectorised call (`exec.mode`, `exec.chunk`).

Both modes give the same numbers (tests/test_execution.py: float64 to 1e-10); which is faster depends
on the device and the network (docs/benchmark.md), so `exec.mode=auto` picks by both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.func import vmap

from metarun.algorithms.base import Algorithm, TaskGrads, TaskOutput
from metarun.config.schema import ConfigError
from metarun.core import precision
from metarun.core.functional import Objective, Params
from metarun.core.tasks import Episode

log = logging.getLogger(__name__)
T = TypeVar("T")
MODES = ("loop", "vmap")


def map_tasks(fn: Callable[..., Any], tensors: Sequence[Tensor], mode: str, chunk: int = 0) -> Any:
    """fn applied to each task (the leading dimension) of `tensors`, its outputs stacked over the tasks: in a
    Python loop, or vectorised with vmap, `chunk` tasks per call (0: all at once)."""
    if mode == "vmap":
        return vmap(fn, chunk_size=chunk or None)(*tensors)
    if mode != "loop":
        raise ValueError(f"exec mode must be one of {', '.join(MODES)}, got {mode!r}")
    return _stacked([fn(*(t[i] for t in tensors)) for i in range(len(tensors[0]))])


def _stacked(outputs: list[Any]) -> Any:
    """Per-task outputs (tensors, or tuples and dicts of them) stacked into one with a leading task dimension."""
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.stack(outputs)
    if isinstance(first, dict):
        return {k: _stacked([o[k] for o in outputs]) for k in first}
    parts = [_stacked(list(p)) for p in zip(*outputs, strict=True)]
    return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)


def task_grads(
    algo: Algorithm,
    theta: Params,
    objective: Objective,
    episode: Episode,
    mode: str = "loop",
    chunk: int = 0,
    diagnose: bool = True,
    need_loss: bool = False,
) -> TaskGrads:
    """`algo.task` on every task of the episode. `diagnose` adds the query losses before and after adaptation
    to every task's metrics; `need_loss` only the one after (for weightings that read it)."""
    if mode == "vmap" and algo.sequential:
        raise ValueError(f"{algo.name} carries state from task to task; its tasks run in a loop, not vmap")

    def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        output = algo.task(theta, objective, sx, sy, qx, qy)
        if diagnose:
            return algo.diagnostics(theta, objective, qx, qy, output)
        return algo.with_loss_after(theta, objective, qx, qy, output) if need_loss else output

    return TaskGrads(*map_tasks(one, episode, mode, chunk))


def execution_mode(name: str, device: torch.device, model: nn.Module) -> str:
    """`exec.mode`, with `auto` resolved to what the benchmark found faster on this device and model.

    On a GPU, vmap. On a CPU, vmap for networks of small matrix products (the sine MLP: 3-6x
    faster than the loop), but the loop for convolutional networks: batching 32 tasks' images
    there was slower and took 4-9x the memory (docs/benchmark.md).
    """
    if name != "auto":
        return name
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return "vmap" if device.type == "cuda" or not convolutional else "loop"


class OutOfMemory(ConfigError):
    """The device ran out of memory where no smaller chunk can help; the message says what to change."""


class Chunking:
    """Tasks per vmap call for one kind of work (`what`: the training step, or evaluation).

    `setting` is `exec.chunk`: N tasks per call, 0 = all, or `auto`. With `auto` on a CUDA device in
    vmap mode the first call is the probe: it takes the whole batch; when the device runs out of
    memory, then or on any later call, the call is retried with half as many tasks per call, and the
    new size is logged and kept (`size`). Anywhere else `auto` is 0, all tasks in one call: on a CPU
    the memory is the operating system's to manage, and a loop has nothing to chunk.
    """

    def __init__(self, setting: int | str, device: torch.device, mode: str, what: str) -> None:
        self.setting = setting
        self.adaptive = setting == "auto" and device.type == "cuda" and mode == "vmap"
        self.size = 0 if setting == "auto" else int(setting)
        self.mode, self.device, self.what = mode, device, what
        self.probed = False

    def tasks_per_call(self, tasks: int) -> int:
        return 1 if self.mode == "loop" else min(self.size or tasks, tasks)

    def run(self, compute: Callable[[int], T], tasks: int) -> T:
        """compute(chunk) for a batch of `tasks`, with the chunk halved after each out-of-memory error if adaptive."""
        while True:
            size = self.tasks_per_call(tasks)
            try:
                out = compute(self.size)
            except torch.cuda.OutOfMemoryError:
                if not self.adaptive or size <= 1:
                    raise OutOfMemory(self._advice(size)) from None
            else:
                if self.adaptive and not self.probed:
                    self.probed = True
                    log.info("exec.chunk=auto: %s runs %d tasks per vmap call on %s", self.what, size, self.device)
                return out
            # Here, outside the except block, the failed attempt's tensors are free: return them to the device.
            torch.cuda.empty_cache()
            self.size = (size + 1) // 2
            log.warning("exec.chunk=auto: %s ran out of memory on %s with %d tasks per vmap call; retrying with %d",
                        self.what, self.device, size, self.size)

    def _advice(self, size: int) -> str:
        continues = ("The run folder keeps what it holds (metrics.csv, and the last checkpoint if one was saved: the "
                     "same command with other `exec.*` settings continues from it).")
        if self.mode == "vmap" and size > 1:
            return (f"{self.device} ran out of memory in the {self.what} with {size} tasks per vmap call "
                    f"(`exec.chunk={self.setting}`). Set `exec.chunk=auto` to use the largest chunk that fits, or a "
                    f"smaller `exec.chunk`. {continues}")
        return (f"{self.device} ran out of memory in the {self.what} with a single task "
                f"(`exec.mode={self.mode}`, `exec.chunk={self.setting}`): one task of this setting needs more memory "
                "than the device has free. Lower `inner.steps`, `train.queries` or `model.filters`, or use a method "
                "whose memory does not grow with the inner steps (`algo=fomaml`, `algo=reptile`, `algo=imaml`). "
                f"{continues}")


class Executor:
    """How a run computes its tasks: the mode, the chunking of training and of evaluation, and the autocast."""

    def __init__(self, mode: str, device: torch.device, chunk: int | str, autocast: str,
                 sequential: bool = False) -> None:
        self.mode = mode  # evaluation's, and the training step's unless the algorithm is sequential
        # A carried inner-optimiser state makes the tasks of a meta-batch a sequence: they train one by one.
        self.train_mode = "loop" if sequential else mode
        self.device, self.autocast = device, autocast
        self.train_chunks = Chunking(chunk, device, self.train_mode, "training step")
        # Evaluation keeps no outer graph: more tasks fit per call, found the same way.
        self.eval_chunks = Chunking("auto", device, mode, "evaluation")

    def task_grads(self, algo: Algorithm, theta: Params, objective: Objective, episode: Episode,
                   diagnose: bool = False, need_loss: bool = False) -> TaskGrads:
        """A meta-batch's TaskGrads in this process."""
        with precision.autocast(self.autocast, self.device):
            return self.train_chunks.run(
                lambda chunk: task_grads(algo, theta, objective, episode, self.train_mode, chunk, diagnose, need_loss),
                len(episode))

    def over_tasks(self, fn: Callable[..., Any], tensors: Sequence[Tensor]) -> Any:
        """fn over the tasks of `tensors` (evaluation: no outer graph), chunked as `exec.chunk=auto` finds."""
        with precision.autocast(self.autocast, self.device):
            return self.eval_chunks.run(lambda chunk: map_tasks(fn, tensors, self.mode, chunk), len(tensors[0]))
