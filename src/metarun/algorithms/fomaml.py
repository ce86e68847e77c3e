"""First-order MAML: the query-loss gradient at the adapted parameters, no second-order terms."""

from __future__ import annotations

from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.core import inner
from metarun.core.autodiff import grad_and_value
from metarun.core.functional import Objective, Params, subtract


class FOMAML(Algorithm):
    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        phi = inner.sgd(theta, self.support_objectives(objective, sx, sy), self.steps, self.lr)
        meta_grad, after = grad_and_value(lambda p: objective(p, qx, qy))(phi)
        return meta_grad, subtract(theta, phi), {"loss_after": after}
