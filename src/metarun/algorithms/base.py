"""The per-task contract every algorithm meets, and the executor that runs it over a batch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

from metarun import inner
from metarun.functional import Objective, Params
from metarun.tasks import Episode


class TaskGrads(NamedTuple):
    """Per-task quantities, each leaf with a leading task dimension T."""

    meta_grads: Params  # d L_query(adapted_i) / d theta (Reptile: theta - phi_i)
    updates: Params  # g_i = theta - phi_i, the inner-loop displacement
    metrics: dict[str, Tensor]  # [T] each: query loss before and after adaptation


TaskOutput = tuple[Params, Params, dict[str, Tensor]]


class Algorithm:
    """Holds the inner-loop settings; subclasses define `task` for one task."""

    # False where the inner loop adapts something other than theta (CAVIA's context), so
    # the displacements theta - phi_i are all zero and cannot weigh tasks.
    moves_parameters = True

    def __init__(self, name: str, steps: int, lr: float) -> None:
        self.name = name
        self.steps = steps
        self.lr = lr

    def adapt(self, theta: Params, loss: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        """Test-time adaptation: the inner loop from theta on (x, y), with no outer graph."""
        return inner.sgd(theta, lambda p: loss(p, x, y), steps, lr)

    def predict(
        self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, lr: float
    ) -> Tensor:
        """Predictions on the query inputs after test-time adaptation on the support set."""
        return loss.predict_query(self.adapt(theta, loss, sx, sy, steps, lr), sx, qx)

    def task(self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        raise NotImplementedError


def task_grads(
    algo: Algorithm, theta: Params, loss: Objective, episode: Episode, mode: str = "loop", chunk: int = 0
) -> TaskGrads:
    """Run `algo.task` on every task of the episode, in a Python loop or vectorised."""

    def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        return algo.task(theta, loss, sx, sy, qx, qy)

    if mode == "vmap":
        out = vmap(one, chunk_size=chunk or None)(*episode)
        return TaskGrads(*out)
    if mode != "loop":
        raise ValueError(f"exec mode must be 'loop' or 'vmap', got {mode!r}")
    outs = [one(*(t[i] for t in episode)) for i in range(len(episode))]
    return TaskGrads(*(_stack([o[j] for o in outs]) for j in range(3)))


def _stack(trees: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([t[k] for t in trees]) for k in trees[0]}
