"""w_i = 1/T: the plain average of the per-task meta-gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.algorithms.base import TaskGrads
from metarun.core.distributed import SOLO, World
from metarun.core.functional import Params
from metarun.weighting.base import Weighting


def uniform(tree: Params, tasks: int | None = None) -> Tensor:
    """1/T for each task of `tree` ([share, ...] leaves), on its device and in its dtype; T = `tasks`, by default
    the tasks of `tree`."""
    like = next(iter(tree.values()))
    return torch.full((like.shape[0],), 1.0 / (tasks or like.shape[0]), dtype=like.dtype, device=like.device)


class Uniform(Weighting):
    def __init__(self, name: str = "uniform") -> None:
        super().__init__(name)

    def __call__(self, grads: TaskGrads, check: bool = True, world: World = SOLO, tasks: int | None = None) -> Tensor:
        return uniform(grads.meta_grads, tasks)  # nothing to reduce: every rank knows T
