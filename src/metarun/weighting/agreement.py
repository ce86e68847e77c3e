"""Gradient agreement (Eshratifar et al. 2018, eq. 13): tasks whose vector agrees with the batch weigh more."""

from __future__ import annotations

from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskGrads
from metarun.config.schema import ConfigError
from metarun.core.distributed import SOLO, World
from metarun.core.functional import Params, flatten
from metarun.weighting.base import Weighting, WeightingError

VECTORS = ("auto", "updates", "meta_grads")


def agreement(vectors: Params, check: bool = True, world: World = SOLO) -> Tensor:
    """w_i = sum_j g_i.g_j / sum_k |sum_j g_k.g_j| over the rows g_i of `vectors` ([T, ...] leaves).

    A task whose vector disagrees with the batch's sum gets a negative weight, and sum_i |w_i| = 1.

    When every s_i is zero (every g is zero, or the g cancel exactly) the ratio is 0/0 and the
    tasks cannot be told apart. That is an error, not a quiet fall-back to uniform weights:
    results labelled `agreement` must have been weighted by agreement, and in practice it only
    happens when no inner loop moves the parameters, a set-up to fix rather than to average over.
    Testing for it reads the device from the host (a GPU sync); with `check=False` the weights
    are then NaN, which the training loop's finiteness check stops.

    Across ranks (each holding its share of the rows) no row leaves its rank: sum_j g_j is one all-reduce,
    sum_k |s_k| one scalar all-reduce, and each rank weighs its own tasks.
    """
    g = flatten(vectors)
    # In float64, rounded once at the end: the same weights for every split of the tasks among ranks.
    g64 = g.double()
    s = g64 @ world.sum(g64.sum(dim=0))  # s_i = sum_j g_i.g_j without forming the T x T Gram matrix
    total = world.sum(s.abs().sum())
    if check and total == 0:
        raise WeightingError(_undefined(g, world))
    return (s / total).to(g.dtype)


def _undefined(g: Tensor, world: World) -> str:
    # Every rank gets here together (`total` is global), so the message describes the whole meta-batch.
    tasks = int(world.sum(g.new_tensor(g.shape[0], dtype=g.dtype)).item())
    moved = world.any(bool(g.any()))
    what = "the tasks' vectors sum to exactly zero" if moved else "every task's vector is exactly zero"
    return (f"`weighting=agreement` cannot weigh this meta-batch of {tasks} tasks: {what}, so the weights "
            "s_i / sum_k |s_k| are 0/0 and no task can be told from another. Check that the inner loop moves the "
            "parameters (`inner.lr`, `inner.steps`), compare other vectors with `weighting.vectors=...`, or use "
            "`weighting=uniform`.")


class Agreement(Weighting):
    """`vectors`: which per-task vectors are compared. `updates` are g_i = theta - phi_i, the paper's choice
    (Algorithm 1), over the network's parameters only: meta-parameters an algorithm owns (Meta-SGD's learned
    learning rates) do not move in the inner loop. `meta_grads` are the per-task meta-gradients, the
    algorithm's own meta-parameters' included. `auto` is `updates`, except `meta_grads` for algorithms
    whose inner loop leaves the network where it is (CAVIA), where every g_i would be zero."""

    def __init__(self, name: str = "agreement", vectors: str = "auto") -> None:
        super().__init__(name)
        if vectors not in VECTORS:
            raise ConfigError(f"`weighting.vectors={vectors}` is unknown. Valid values: {', '.join(VECTORS)}.")
        self.vectors = vectors
        self.field = "updates" if vectors == "auto" else vectors

    def bind(self, algo: Algorithm) -> None:
        if self.vectors == "auto":
            self.field = "updates" if algo.moves_parameters else "meta_grads"
        elif self.vectors == "updates" and not algo.moves_parameters:
            raise ConfigError(
                f"`weighting.vectors=updates` is degenerate for algo={algo.name}: its inner loop does not move the "
                "network's parameters, so every update theta - phi_i is zero and agreement cannot tell tasks apart. "
                "Use `weighting.vectors=meta_grads` (or `auto`)."
            )

    def __call__(self, grads: TaskGrads, check: bool = True, world: World = SOLO, tasks: int | None = None) -> Tensor:
        return agreement(getattr(grads, self.field), check, world)

    def record(self) -> dict:
        return {"weighting_vectors": self.field}
