"""What every task weighting is: a function of a meta-batch's TaskGrads that gives one weight per task."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskGrads
from metarun.core.distributed import SOLO, World


class WeightingError(ValueError):
    """Weights that cannot be computed for this meta-batch; the message says why and what to change."""


class Weighting:
    """w [T] for the T tasks of a meta-batch, on the gradients' device; the loop combines sum_i w_i meta_grads_i.

    A weighting owns its settings (the constructor's arguments, from its YAML) and reads whichever of the
    TaskGrads it needs. `check=False` asks it to skip checks that read the device (a GPU sync): the loop
    passes it on every iteration and, when the combined gradient comes out non-finite, weighs again with
    `check=True` so that the weighting can say why.

    Under torch.distributed each rank holds the TaskGrads of its share of the meta-batch (`tasks` tasks in
    all) and gets the weights of its own tasks: a weighting reduces across the `world` only the scalars or
    sums it needs, never a per-task vector. Alone (`world=SOLO`) that is the plain computation.
    """

    # True where the weights need every task's post-adaptation query loss (`metrics["loss_after"]`) on every
    # iteration: the loop then asks the algorithms that skip it on non-logging iterations (Reptile) for it.
    needs_loss = False

    def __init__(self, name: str) -> None:
        self.name = name

    def bind(self, algo: Algorithm) -> None:
        """Check the settings against the algorithm whose TaskGrads will be weighed (ConfigError if they
        cannot work with it)."""

    def __call__(self, grads: TaskGrads, check: bool = True, world: World = SOLO, tasks: int | None = None) -> Tensor:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """What results.json says of the weighting beyond its name."""
        return {"weighting_vectors": None}
