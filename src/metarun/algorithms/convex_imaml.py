"""Convex iMAML: the head's proximal inner problem solved by Newton's method, implicit meta-gradients.

Inner problem on the body's features f(theta_body):
    phi* = argmin_phi L_support(phi; f) + (lambda/2) ||phi - theta_head||^2,
convex in the head phi and small (features x outputs + outputs), so its Hessian H is
formed and solved exactly. From the optimality condition
grad_phi L_support(phi*; theta_body) + lambda (phi* - theta_head) = 0 and
v = (H + lambda I)^-1 grad_phi L_query(phi*):
    dL_query/d theta_head = lambda v,
    dL_query/d theta_body = (direct gradient of L_query) - v^T d/d theta_body grad_phi L_support.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, hessian, vjp

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.functional import Objective, Params, ravel, subtract


class ConvexIMAML(Algorithm):
    """`steps` are Newton iterations here; the learning rate is unused (Newton takes full steps)."""

    def __init__(self, name: str, steps: int, lr: float, lam: float = 1.0) -> None:
        super().__init__(name, steps, lr)
        if lam <= 0:
            raise ValueError(f"Convex iMAML needs lam > 0, got {lam}")
        self.lam = lam

    def solve_head(self, head0: Params, loss: Objective, features: Tensor, y: Tensor, steps: int) -> Params:
        """Newton's method on the proximal head problem from head0 (fixed count: vmap-friendly)."""
        flat0, unravel = ravel(head0)

        def proximal(flat: Tensor) -> Tensor:
            return loss.head_loss(unravel(flat), features, y) + 0.5 * self.lam * ((flat - flat0) ** 2).sum()

        flat = flat0
        for _ in range(steps):
            g, h = grad(proximal)(flat), hessian(proximal)(flat)
            flat = flat - torch.linalg.solve(h, g)
        return unravel(flat)

    def adapt(self, theta: Params, loss: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        _, head = loss.split(theta)
        return {**theta, **self.solve_head(head, loss, loss.features(theta, x), y, steps)}

    def task(self, theta: Params, loss: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        body, head = loss.split(theta)
        phi = self.solve_head(head, loss, loss.features(theta, sx), sy, self.steps)
        flat_phi, unravel = ravel(phi)

        def support_loss(flat: Tensor, b: Params) -> Tensor:
            return loss.head_loss(unravel(flat), loss.features(b, sx), sy)

        def query_loss(flat: Tensor, b: Params) -> Tensor:
            return loss.head_loss(unravel(flat), loss.features(b, qx), qy)

        (query_head, query_body), after = grad_and_value(query_loss, argnums=(0, 1))(flat_phi, body)
        h = hessian(support_loss, argnums=0)(flat_phi, body)
        eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
        v = torch.linalg.solve(h + self.lam * eye, query_head)
        # Mixed term: v^T d/d body of grad_phi L_support, as one vector-Jacobian product.
        _, pullback = vjp(lambda b: grad(support_loss, argnums=0)(flat_phi, b), body)
        (mixed,) = pullback(v)
        meta_grad = {**{k: query_body[k] - mixed[k] for k in body}, **unravel(self.lam * v)}
        residual = grad(support_loss, argnums=0)(flat_phi, body) + self.lam * (flat_phi - ravel(head)[0])
        metrics = {"loss_before": loss(theta, qx, qy), "loss_after": after, "inner_residual": residual.norm()}
        return meta_grad, subtract(theta, {**theta, **phi}), metrics

