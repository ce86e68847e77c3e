"""How many tasks one vmap call takes: a fixed count, or on a GPU the most that fit in its memory (`exec.chunk`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

from metarun.config import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


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
