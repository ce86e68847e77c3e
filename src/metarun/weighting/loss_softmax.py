"""Loss-weighted tasks: w_i = softmax(L_i / tau), the baseline that task-weighting papers compare against.

L_i is task i's query loss after adaptation. Harder tasks weigh more; tau -> infinity gives uniform
weights, tau -> 0 puts all the weight on the hardest task. The weights are constants of the outer
step (no gradient flows through them), as a weighting of fixed meta-gradients must be.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metarun.algorithms.base import TaskGrads
from metarun.config.schema import ConfigError
from metarun.core.distributed import SOLO, World
from metarun.weighting.base import Weighting


def loss_softmax(losses: Tensor, temperature: float, world: World = SOLO) -> Tensor:
    """softmax(L / tau) over the T tasks' losses [T] (across ranks: over every rank's share, two scalar
    all-reduces): positive weights that sum to 1."""
    z = losses.detach().double() / temperature  # float64, rounded once: the same for any split among ranks
    e = torch.exp(z - world.max(z.max()))
    return (e / world.sum(e.sum())).to(losses.dtype)


class LossSoftmax(Weighting):
    needs_loss = True

    def __init__(self, name: str = "loss_softmax", temperature: float = 1.0) -> None:
        super().__init__(name)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            raise ConfigError(
                f"`weighting.temperature={temperature}` is invalid: the softmax temperature tau must be a number "
                "greater than 0. Set e.g. `weighting.temperature=1.0` (larger is closer to uniform weights)."
            )
        self.temperature = float(temperature)

    def __call__(self, grads: TaskGrads, check: bool = True, world: World = SOLO, tasks: int | None = None) -> Tensor:
        losses = grads.metrics["loss_after"]
        return loss_softmax(losses, self.temperature, world).to(losses.dtype)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "weighting_temperature": self.temperature}
