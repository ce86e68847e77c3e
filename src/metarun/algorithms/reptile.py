"""Reptile (Nichol et al. 2018): the pseudo-gradient theta - phi_K of K inner steps.

Applied by the outer SGD, theta <- theta - eps * sum_i w_i (theta - phi_i), which with
uniform weights is the paper's theta <- theta + eps * mean_i (phi_i - theta).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from metarun import inner
from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.functional import Objective, Params, subtract


class Reptile(Algorithm):
    def __init__(
        self,
        name: str,
        steps: int,
        lr: float,
        inner_optimizer: str = "sgd",
        adam_betas: Sequence[float] = (0.0, 0.999),
    ) -> None:
        super().__init__(name, steps, lr)
        self.minimize = inner.optimizer(inner_optimizer, adam_betas)

    def adapt(self, theta: Params, loss: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        return self.minimize(theta, lambda p: loss(p, x, y), steps, lr)

    def task(self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        phi = self.adapt(theta, loss, sx, sy, self.steps, self.lr)
        displacement = subtract(theta, phi)
        # Reptile's update needs no query pass; `diagnostics` adds the query losses when logged.
        return displacement, displacement, {}
