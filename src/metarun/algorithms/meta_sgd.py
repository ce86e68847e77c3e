"""Meta-SGD (Li et al. 2017): MAML whose inner learning rate is a learned tensor alpha, one entry per parameter.

    phi = theta - alpha * grad L_support(theta)        (elementwise, `inner.steps` times; one by default)

alpha has theta's shapes, starts at `inner.lr` everywhere and is meta-learned with theta by the same outer
optimiser, second order through the inner steps as in MAML. It is stored as the meta-parameters
`algo.lr.<parameter name>`. Test-time adaptation uses the learned alpha: `eval.lr` is unused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.algorithms.base import META, Algorithm, TaskOutput, displacement, network
from metarun.core import inner
from metarun.core.autodiff import grad
from metarun.core.functional import Objective, Params

LR = META + "lr."


class MetaSGD(Algorithm):
    def meta_parameters(self, theta: Params, objective: Objective) -> Params:
        return {LR + k: torch.full_like(v, self.lr) for k, v in theta.items()}

    def descend(self, theta: Params, support: inner.Losses, steps: int) -> Params:
        """`steps` steps of phi - alpha * grad, from the network's parameters of theta."""
        phi = network(theta)
        for i in range(steps):
            g = grad(inner.at(support, i))(phi)
            phi = {k: phi[k] - theta[LR + k] * g[k] for k in phi}
        return phi

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        return self.descend(theta, lambda p: objective(p, x, y), steps)

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        def query_after_adaptation(p: Params) -> tuple[Tensor, tuple[Tensor, Params]]:
            phi = self.descend(p, self.support_objectives(objective, sx, sy), self.steps)
            after = objective(phi, qx, qy)
            return after, (after, phi)

        meta_grad, (after, phi) = grad(query_after_adaptation, has_aux=True)(theta)
        return meta_grad, displacement(theta, phi), {"loss_after": after}
