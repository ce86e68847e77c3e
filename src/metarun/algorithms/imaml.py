"""iMAML (Rajeswaran et al. 2019): implicit meta-gradients through a proximal inner problem.

Inner problem: phi* = argmin_phi L_support(phi) + (lambda/2) ||phi - theta||^2, run from
theta without keeping a graph. At phi*, d phi*/d theta = (I + H/lambda)^-1 with H the
Hessian of L_support at phi*, so the meta-gradient is v = (I + H/lambda)^-1 grad L_query(phi*),
found by conjugate gradient on Hessian-vector products: memory independent of the number
of inner steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.core import inner, solvers
from metarun.core.autodiff import grad, grad_and_value
from metarun.core.functional import Objective, Params, dot, subtract


class IMAML(Algorithm):
    def __init__(
        self,
        name: str,
        steps: int,
        lr: float,
        lam: float = 1.0,
        cg_steps: int = 5,
        cg_damping: float = 0.0,
        inner_optimizer: str = "sgd",
        adam_betas: Sequence[float] = (0.9, 0.999),
    ) -> None:
        super().__init__(name, steps, lr)
        if lam <= 0 or cg_steps < 1 or cg_damping < 0:
            raise ValueError(f"iMAML needs lam > 0, cg_steps >= 1, cg_damping >= 0; got {lam}, {cg_steps}, "
                             f"{cg_damping}")
        self.lam, self.cg_steps, self.cg_damping = lam, cg_steps, cg_damping
        self.minimize = inner.optimizer(inner_optimizer, adam_betas)

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        def proximal(p: Params) -> Tensor:
            d = subtract(p, theta)
            return objective(p, x, y) + 0.5 * self.lam * dot(d, d)

        return self.minimize(theta, proximal, steps, lr)

    def meta_gradient(self, phi: Params, objective: Objective, sx: Tensor, sy: Tensor, query_grad: Params) -> Params:
        """Solve ((1 + damping) I + H / lambda) v = grad L_query(phi) by CG."""
        support_grad = grad(lambda p: objective(p, sx, sy))

        def matvec(v: Params) -> Params:
            hv = grad(lambda p: dot(support_grad(p), v))(phi)  # H v by reverse-over-reverse
            return {k: (1 + self.cg_damping) * v[k] + hv[k] / self.lam for k in v}

        return solvers.conjugate_gradient(matvec, query_grad, self.cg_steps)

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        phi = self.adapt(theta, objective, sx, sy, self.steps, self.lr)
        query_grad, after = grad_and_value(lambda p: objective(p, qx, qy))(phi)
        meta_grad = self.meta_gradient(phi, objective, sx, sy, query_grad)
        return meta_grad, subtract(theta, phi), {"loss_after": after}
