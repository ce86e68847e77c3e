"""Convex MAML (Khullar & Srivastava, "Gradient-based Accelerated Adaptation of Deep Networks").

The inner loop adapts only the final linear head on the body's features, a convex problem;
the features are computed once per task. The meta-gradient differentiates through the
head's K SGD steps into both the head's initialisation and the body, whose features enter
the support and the query loss.
"""

from __future__ import annotations

from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.core import inner
from metarun.core.autodiff import grad
from metarun.core.functional import Objective, Params, subtract


class ConvexMAML(Algorithm):
    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        _, head = objective.split(theta)
        features = objective.features(theta, x)
        return {**theta, **inner.sgd(head, lambda h: objective.head_loss(h, features, y), steps, lr)}

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        def query_after_adaptation(p: Params) -> tuple[Tensor, tuple[Tensor, Params]]:
            _, head = objective.split(p)
            support = objective.features(p, sx)
            adapted = inner.sgd(head, lambda h: objective.head_loss(h, support, sy), self.steps, self.lr)
            after = objective.head_loss(adapted, objective.features(p, qx), qy)
            return after, (after, adapted)

        meta_grad, (after, adapted) = grad(query_after_adaptation, has_aux=True)(theta)
        return meta_grad, subtract(theta, {**theta, **adapted}), {"loss_after": after}
