"""CAVIA (Zintgraf et al. 2019): adapt only a per-task context vector; meta-learn the network.

The context starts at zero for every task and takes K SGD steps on the support loss; the
network's parameters do not move in the inner loop. The meta-gradient differentiates the
query loss through those context steps into the network (second order, as in the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.core import inner
from metarun.core.autodiff import grad
from metarun.core.functional import Objective, Params, zeros_like


class CAVIA(Algorithm):
    moves_parameters = False

    def __init__(self, name: str, steps: int, lr: float, context_size: int = 4) -> None:
        super().__init__(name, steps, lr)
        if context_size < 1:
            raise ValueError(f"CAVIA needs context_size >= 1, got {context_size}")
        self.context_size = context_size

    def context(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Tensor:
        like = next(iter(theta.values()))
        start = {"context": torch.zeros(self.context_size, dtype=like.dtype, device=like.device)}
        return inner.sgd(start, lambda c: objective(theta, x, y, context=c["context"]), steps, lr)["context"]

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        raise NotImplementedError("CAVIA adapts a context vector, not the parameters; use predict()")

    def predict(
        self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, lr: float
    ) -> Tensor:
        return objective.predict_query(theta, sx, qx, context=self.context(theta, objective, sx, sy, steps, lr))

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        def query_after_adaptation(p: Params) -> tuple[Tensor, Tensor]:
            after = objective(p, qx, qy, context=self.context(p, objective, sx, sy, self.steps, self.lr))
            return after, after

        meta_grad, after = grad(query_after_adaptation, has_aux=True)(theta)
        return meta_grad, zeros_like(theta), {"loss_after": after}

    def loss_before(self, theta: Params, objective: Objective, qx: Tensor, qy: Tensor) -> Tensor:
        like = next(iter(theta.values()))
        return objective(theta, qx, qy, context=torch.zeros(self.context_size, dtype=like.dtype, device=like.device))
