"""The per-task contract every algorithm meets (DESIGN.md's TaskGrads)."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from metarun.core import inner
from metarun.core.functional import Objective, Params

# Names of the meta-parameters an algorithm owns (Meta-SGD's learning rates) start with this, so that they
# never collide with the network's (`body.convs.0.weight`, `head.bias`).
META = "algo."


class TaskGrads(NamedTuple):
    """Per-task quantities, each leaf with a leading task dimension T."""

    meta_grads: Params  # d L_query(adapted_i) / d theta (Reptile: theta - phi_i), every meta-parameter's
    updates: Params  # g_i = theta - phi_i, the inner-loop displacement of the network's parameters
    metrics: dict[str, Tensor]  # [T] each: query loss after adaptation (and before, when diagnosed)


TaskOutput = tuple[Params, Params, dict[str, Tensor]]


def network(theta: Params) -> Params:
    """The network's parameters of theta, without the algorithm's own meta-parameters."""
    return {k: v for k, v in theta.items() if not k.startswith(META)}


def displacement(theta: Params, phi: Params) -> Params:
    """theta - phi over the parameters phi adapts."""
    return {k: theta[k] - phi[k] for k in phi}


class Algorithm:
    """Holds the inner-loop settings; subclasses define `task` for one task.

    theta, as every method takes it, is the meta-parameters: the network's parameters and, with names
    starting `algo.`, those the algorithm declares in `meta_parameters` (the objective ignores the latter).
    """

    # False where the inner loop adapts something other than theta (CAVIA's context), so
    # the displacements theta - phi_i are all zero and cannot weigh tasks.
    moves_parameters = True
    # True where a task's inner loop starts from state the previous task left (Reptile with a carried
    # inner Adam): the tasks of a meta-batch then form a sequence and cannot be vectorised or shared out.
    sequential = False

    def __init__(self, name: str, steps: int, lr: float, sub_batches: int = 1) -> None:
        if sub_batches < 1:
            raise ValueError(f"sub_batches must be at least 1, got {sub_batches}")
        self.name = name
        self.steps = steps
        self.lr = lr
        self.sub_batches = sub_batches
        self.iteration = 0

    def meta_parameters(self, theta: Params, objective: Objective) -> Params:
        """Initial values of the algorithm's own meta-parameters (names starting `algo.`), created from the
        network's parameters theta on their device; the outer optimiser steps them with the network's, and
        the checkpoint keeps them. None by default."""
        return {}

    def progress(self, iteration: int) -> None:
        """Called by the training loop before each meta-step: for settings that change over training
        (MAML++'s annealed multi-step loss and derivative order)."""
        self.iteration = iteration

    def support_objectives(self, objective: Objective, x: Tensor, y: Tensor) -> list[inner.Loss]:
        """The training inner loop's objectives: the whole support set, or its `sub_batches` sub-batches
        (Eshratifar et al. 2018, Algorithm 1, line 5: step i descends sub-batch i mod k).

        Sub-batch i holds every k-th example from the i-th: support sets list their classes in turn, so
        each sub-batch gets a near-equal share of every class.
        """
        k = self.sub_batches
        if k == 1:
            return [lambda p: objective(p, x, y)]
        if k > x.shape[0]:
            raise ValueError(f"cannot split a support set of {x.shape[0]} examples into {k} sub-batches")
        return [lambda p, i=i: objective(p, x[i::k], y[i::k]) for i in range(k)]

    def record(self) -> dict[str, Any]:
        """What results.json says of the algorithm beyond its name: fields of its own (a field that
        metarun.report.record does not declare counts as a setting in tables). None by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State the algorithm carries from task to task and must be checkpointed (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (on resuming a run)."""

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        """Test-time adaptation: the inner loop from theta on (x, y), with no outer graph."""
        return inner.sgd(network(theta), lambda p: objective(p, x, y), steps, lr)

    def predict(
        self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, lr: float
    ) -> Tensor:
        """Predictions on the query inputs after test-time adaptation on the support set."""
        return objective.predict_query(self.adapt(theta, objective, sx, sy, steps, lr), sx, qx)

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        """Meta-gradient, update and metrics for one task. Metrics hold only what the meta-gradient
        computes anyway (e.g. `loss_after`); `diagnostics` adds the rest on iterations that log."""
        raise NotImplementedError

    def loss_before(self, theta: Params, objective: Objective, qx: Tensor, qy: Tensor) -> Tensor:
        """Query loss of theta itself, before any adaptation."""
        return objective(theta, qx, qy)

    def loss_after(self, theta: Params, objective: Objective, qx: Tensor, qy: Tensor, update: Params) -> Tensor:
        """Query loss of the adapted parameters theta - update (for algorithms whose meta-gradient needs none)."""
        return objective({**theta, **{k: theta[k] - update[k] for k in update}}, qx, qy)

    def with_loss_after(
        self, theta: Params, objective: Objective, qx: Tensor, qy: Tensor, output: TaskOutput
    ) -> TaskOutput:
        """`output` with the query loss after adaptation, if it lacks it."""
        meta_grad, update, metrics = output
        if "loss_after" in metrics:
            return output
        return meta_grad, update, {"loss_after": self.loss_after(theta, objective, qx, qy, update), **metrics}

    def diagnostics(
        self, theta: Params, objective: Objective, qx: Tensor, qy: Tensor, output: TaskOutput
    ) -> TaskOutput:
        """`output` with the query losses before and after adaptation, whichever it lacks.

        These are extra query passes the meta-gradient does not need (a third of MAML's cost
        per task on Omniglot), so the training loop asks for them only when it logs.
        """
        meta_grad, update, metrics = self.with_loss_after(theta, objective, qx, qy, output)
        return meta_grad, update, {"loss_before": self.loss_before(theta, objective, qx, qy), **metrics}
