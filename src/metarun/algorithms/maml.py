"""MAML (Finn et al. 2017): the exact meta-gradient through K differentiable SGD steps."""

from __future__ import annotations

from torch import Tensor

from metarun import inner
from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.autodiff import grad
from metarun.functional import Objective, Params, subtract


class MAML(Algorithm):
    def task(self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        def query_after_adaptation(p: Params) -> tuple[Tensor, tuple[Tensor, Params]]:
            # The inner grads are taken inside the outer `grad`, so their dependence on
            # theta is differentiated too: second order, no approximation.
            phi = inner.sgd(p, self.support_objectives(loss, sx, sy), self.steps, self.lr)
            after = loss(phi, qx, qy)
            return after, (after, phi)

        meta_grad, (after, phi) = grad(query_after_adaptation, has_aux=True)(theta)
        return meta_grad, subtract(theta, phi), {"loss_after": after}
