"""Convex iMAML: the head's proximal inner problem solved by Newton's method, implicit meta-gradients.

Inner problem on the body's features f(theta_body), with the head as one matrix
Theta = [W | b] (outputs x (features + 1)):
    Theta* = argmin L_support(Theta; f) + (lambda/2) ||Theta - Theta_0||^2,
convex in Theta. From the optimality condition
grad_Theta L_support(Theta*; theta_body) + lambda (Theta* - Theta_0) = 0 and
v = (H + lambda I)^-1 grad_Theta L_query(Theta*), H the Hessian of L_support in Theta:
    dL_query/d Theta_0 = lambda v,
    dL_query/d theta_body = (direct gradient of L_query) - v^T d/d theta_body grad_Theta L_support.

The head is linear, so H is exact from the per-example Hessians h_n of the loss in the
outputs: H[(o, j), (p, k)] = sum_n h_n[o, p] a_n[j] a_n[k], with a_n = [f_n, 1]. That
needs a criterion that is a mean over examples (MSE and cross-entropy with their default
reduction are), and costs far less than differentiating twice through the whole head.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, hessian, vjp, vmap

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.core.functional import Objective, Params, subtract


def _augment(features: Tensor) -> Tensor:
    return torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)


def _matrix(head: Params) -> Tensor:
    return torch.cat([head["head.weight"], head["head.bias"][:, None]], dim=1)


def _params(matrix: Tensor) -> Params:
    return {"head.weight": matrix[:, :-1], "head.bias": matrix[:, -1]}


def solve(a: Tensor, b: Tensor) -> Tensor:
    """a^-1 b for the symmetric positive-definite a (a Hessian plus lambda I), without torch.linalg.solve's
    singularity check: that reads a status flag from the device, a GPU sync per call. A singular a would
    give non-finite values, which the training loop's finiteness check stops. Solved in float32 at least:
    under bf16 autocast the Hessian comes out in bf16."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return torch.linalg.solve_ex(a.to(dtype), b.to(dtype))[0]


class ConvexIMAML(Algorithm):
    """`steps` are Newton iterations here; the learning rate is unused (Newton takes full steps)."""

    def __init__(self, name: str, steps: int, lr: float, lam: float = 1.0) -> None:
        super().__init__(name, steps, lr)
        if lam <= 0:
            raise ValueError(f"Convex iMAML needs lam > 0, got {lam}")
        self.lam = lam

    def hessian(self, objective: Objective, matrix: Tensor, a: Tensor, y: Tensor) -> Tensor:
        """Exact Hessian of the mean loss of the linear head a @ matrix.T in vec(matrix) (row-major)."""
        n = a.shape[0]
        per_example = vmap(hessian(lambda z, t: objective.criterion(z[None], t[None])))(a @ matrix.T, y) / n
        h = torch.einsum("nop,nj,nk->ojpk", per_example, a, a)
        return h.reshape(matrix.numel(), matrix.numel())

    def solve_head(self, head0: Params, objective: Objective, features: Tensor, y: Tensor, steps: int) -> Params:
        """Newton's method on the proximal head problem from head0 (a fixed count: vmap-friendly)."""
        start, a = _matrix(head0), _augment(features)
        eye = torch.eye(start.numel(), dtype=start.dtype, device=start.device)
        m = start
        for _ in range(steps):
            g = grad(lambda t: objective.criterion(a @ t.T, y))(m) + self.lam * (m - start)
            h = self.hessian(objective, m, a, y) + self.lam * eye
            m = m - solve(h, g.reshape(-1)).reshape(m.shape)
        return _params(m)

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        _, head = objective.split(theta)
        return {**theta, **self.solve_head(head, objective, objective.features(theta, x), y, steps)}

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        body, head = objective.split(theta)
        support = objective.features(body, sx)  # computed once for the solve and the Hessian
        phi = _matrix(self.solve_head(head, objective, support, sy, self.steps))

        def support_loss(m: Tensor, b: Params) -> Tensor:
            return objective.criterion(_augment(objective.features(b, sx)) @ m.T, sy)

        def query_loss(m: Tensor, b: Params) -> Tensor:
            return objective.criterion(_augment(objective.features(b, qx)) @ m.T, qy)

        (query_head, query_body), after = grad_and_value(query_loss, argnums=(0, 1))(phi, body)
        h = self.hessian(objective, phi, _augment(support), sy)
        eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
        v = solve(h + self.lam * eye, query_head.reshape(-1)).reshape(phi.shape)
        # Mixed term: v^T d/d body of grad_Theta L_support, as one vector-Jacobian product.
        support_grad, pullback = vjp(lambda b: grad(support_loss, argnums=0)(phi, b), body)
        (mixed,) = pullback(v)
        meta_grad = {**{k: query_body[k] - mixed[k] for k in body}, **_params(self.lam * v)}
        residual = support_grad + self.lam * (phi - _matrix(head))
        metrics = {"loss_after": after, "inner_residual": residual.norm()}
        return meta_grad, subtract(theta, {**theta, **_params(phi)}), metrics
