"""The per-task contract every algorithm meets, and the executor that runs it over a batch."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

from metarun import inner
from metarun.functional import Objective, Params, subtract
from metarun.tasks import Episode


class TaskGrads(NamedTuple):
    """Per-task quantities, each leaf with a leading task dimension T."""

    meta_grads: Params  # d L_query(adapted_i) / d theta (Reptile: theta - phi_i)
    updates: Params  # g_i = theta - phi_i, the inner-loop displacement
    metrics: dict[str, Tensor]  # [T] each: query loss after adaptation (and before, when diagnosed)


TaskOutput = tuple[Params, Params, dict[str, Tensor]]


class Algorithm:
    """Holds the inner-loop settings; subclasses define `task` for one task."""

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

    def support_objectives(self, loss: Objective, x: Tensor, y: Tensor) -> list[inner.Objective]:
        """The training inner loop's objectives: the whole support set, or its `sub_batches` sub-batches
        (Eshratifar et al. 2018, Algorithm 1, line 5: step i descends sub-batch i mod k).

        Sub-batch i holds every k-th example from the i-th: support sets list their classes in turn, so
        each sub-batch gets a near-equal share of every class.
        """
        k = self.sub_batches
        if k == 1:
            return [lambda p: loss(p, x, y)]
        if k > x.shape[0]:
            raise ValueError(f"cannot split a support set of {x.shape[0]} examples into {k} sub-batches")
        return [lambda p, i=i: loss(p, x[i::k], y[i::k]) for i in range(k)]

    def state_dict(self) -> dict[str, Any]:
        """State the algorithm carries from task to task and must be checkpointed (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (on resuming a run)."""

    def adapt(self, theta: Params, loss: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        """Test-time adaptation: the inner loop from theta on (x, y), with no outer graph."""
        return inner.sgd(theta, lambda p: loss(p, x, y), steps, lr)

    def predict(
        self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, lr: float
    ) -> Tensor:
        """Predictions on the query inputs after test-time adaptation on the support set."""
        return loss.predict_query(self.adapt(theta, loss, sx, sy, steps, lr), sx, qx)

    def task(self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        """Meta-gradient, update and metrics for one task. Metrics hold only what the meta-gradient
        computes anyway (e.g. `loss_after`); `diagnostics` adds the rest on iterations that log."""
        raise NotImplementedError

    def loss_before(self, theta: Params, loss: Objective, qx: Tensor, qy: Tensor) -> Tensor:
        """Query loss of theta itself, before any adaptation."""
        return loss(theta, qx, qy)

    def diagnostics(self, theta: Params, loss: Objective, qx: Tensor, qy: Tensor, output: TaskOutput) -> TaskOutput:
        """`output` with the query losses before and after adaptation, whichever it lacks.

        These are extra query passes the meta-gradient does not need (a third of MAML's cost
        per task on Omniglot), so the training loop asks for them only when it logs.
        """
        meta_grad, update, metrics = output
        extra = {"loss_before": self.loss_before(theta, loss, qx, qy)}
        if "loss_after" not in metrics:
            extra["loss_after"] = loss(subtract(theta, update), qx, qy)
        return meta_grad, update, {**extra, **metrics}


def task_grads(
    algo: Algorithm,
    theta: Params,
    loss: Objective,
    episode: Episode,
    mode: str = "loop",
    chunk: int = 0,
    diagnose: bool = True,
) -> TaskGrads:
    """Run `algo.task` on every task of the episode, in a Python loop or vectorised.

    `diagnose` adds the query losses before and after adaptation to every task's metrics.
    """

    def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        output = algo.task(theta, loss, sx, sy, qx, qy)
        return algo.diagnostics(theta, loss, qx, qy, output) if diagnose else output

    if mode == "vmap":
        if algo.sequential:
            raise ValueError(f"{algo.name} carries state from task to task; its tasks run in a loop, not vmap")
        out = vmap(one, chunk_size=chunk or None)(*episode)
        return TaskGrads(*out)
    if mode != "loop":
        raise ValueError(f"exec mode must be 'loop' or 'vmap', got {mode!r}")
    outs = [one(*(t[i] for t in episode)) for i in range(len(episode))]
    return TaskGrads(*(_stack([o[j] for o in outs]) for j in range(3)))


def _stack(trees: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([t[k] for t in trees]) for k in trees[0]}
