"""w_i = 1/T: the plain average of the per-task meta-gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.algorithms.base import TaskGrads
from metarun.functional import Params
from metarun.weighting.base import Weighting


def uniform(tree: Params) -> Tensor:
    """1/T for each of the T tasks of `tree` ([T, ...] leaves), on its device and in its dtype."""
    like = next(iter(tree.values()))
    return torch.full((like.shape[0],), 1.0 / like.shape[0], dtype=like.dtype, device=like.device)


class Uniform(Weighting):
    def __init__(self, name: str = "uniform") -> None:
        super().__init__(name)

    def __call__(self, grads: TaskGrads, check: bool = True) -> Tensor:
        return uniform(grads.meta_grads)
