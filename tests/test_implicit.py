"""iMAML and Convex iMAML: implicit meta-gradients against direct solves and finite differences (float64)."""

from __future__ import annotations

import torch
from torch.func import hessian
from torch.nn import functional as F

from metarun.algorithms.convex_imaml import ConvexIMAML
from metarun.algorithms.imaml import IMAML
from metarun.core import solvers
from metarun.core.functional import detached, ravel
from test_gradients import leaves, mlp


def test_conjugate_gradient_matches_a_direct_solve_with_the_explicit_hessian(tiny):
    model, loss, (sx, sy, qx, qy) = tiny
    lam, damping = 4.0, 0.1
    algo = IMAML("imaml", steps=50, lr=0.05, lam=lam, cg_steps=60, cg_damping=damping)
    phi = algo.adapt(detached(model), loss, sx, sy, 50, 0.05)
    flat, unravel = ravel(phi)
    h = hessian(lambda f: loss(unravel(f), sx, sy))(flat)
    a = (1 + damping) * torch.eye(len(flat), dtype=flat.dtype) + h / lam
    assert torch.linalg.eigvalsh(a).min() > 0  # CG's precondition holds here
    b = ravel(torch.func.grad(lambda p: loss(p, qx, qy))(phi))[0]
    direct = torch.linalg.solve(a, b)
    by_cg = ravel(algo.meta_gradient(phi, loss, sx, sy, unravel(b)))[0]
    torch.testing.assert_close(by_cg, direct, rtol=1e-9, atol=1e-11)
    # Too few CG steps give a visibly different answer: the comparison has teeth.
    algo.cg_steps = 2
    assert (ravel(algo.meta_gradient(phi, loss, sx, sy, unravel(b)))[0] - direct).norm() > 1e-4 * direct.norm()


def test_conjugate_gradient_with_a_zero_right_hand_side_stays_finite():
    x = solvers.conjugate_gradient(lambda v: {k: 2 * t for k, t in v.items()}, {"a": torch.zeros(3)}, 5)
    assert torch.equal(x["a"], torch.zeros(3))


def proximal_solution(theta: dict, sx, sy, lam: float, steps: int = 400, lr: float = 0.05) -> dict:
    """Plain gradient descent on L_support(phi) + lam/2 ||phi - theta||^2, with torch.autograd."""
    phi = leaves(theta)
    for _ in range(steps):
        objective = F.mse_loss(mlp(phi, sx), sy) + 0.5 * lam * sum(((phi[k] - theta[k]) ** 2).sum() for k in phi)
        grads = torch.autograd.grad(objective, list(phi.values()))
        phi = {k: (v - lr * g).detach().requires_grad_() for (k, v), g in zip(phi.items(), grads, strict=True)}
    return phi


def directional_check(meta_grad: dict, value_at, theta: dict, seed: int, eps: float = 1e-5) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed)
    d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in theta.items()}
    plus = value_at({k: theta[k] + eps * d[k] for k in theta})
    minus = value_at({k: theta[k] - eps * d[k] for k in theta})
    return sum((meta_grad[k] * d[k]).sum() for k in d).item(), (plus - minus) / (2 * eps)


def test_imaml_meta_gradient_matches_finite_differences_when_solved_tightly(tiny):
    model, loss, (sx, sy, qx, qy) = tiny
    theta, lam = detached(model), 5.0
    algo = IMAML("imaml", steps=400, lr=0.05, lam=lam, cg_steps=80)
    meta_grad, update, _ = algo.task(theta, loss, sx, sy, qx, qy)

    def query_at_solution(t: dict) -> float:
        return F.mse_loss(mlp(proximal_solution(t, sx, sy, lam), qx), qy).item()

    for seed in range(3):
        analytic, numeric = directional_check(meta_grad, query_at_solution, theta, seed)
        assert abs(analytic - numeric) < 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)
    phi = proximal_solution(theta, sx, sy, lam)
    for k in theta:
        torch.testing.assert_close(update[k], theta[k] - phi[k].detach(), rtol=1e-8, atol=1e-10)


def ridge_head(theta: dict, x, y, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed form of the head's proximal problem for MSE: ((2/n) A^T A + lam I) phi = (2/n) A^T y + lam theta_head."""
    feats = torch.relu(x @ theta["body.0.weight"].T + theta["body.0.bias"])
    a = torch.cat([feats, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    head0 = torch.cat([theta["head.weight"].reshape(-1), theta["head.bias"]])
    n = len(x)
    lhs = 2 / n * a.T @ a + lam * torch.eye(a.shape[1], dtype=x.dtype)
    phi = torch.linalg.solve(lhs, 2 / n * a.T @ y.reshape(-1) + lam * head0)
    return phi[:-1].reshape(1, -1), phi[-1:]


def test_convex_imaml_meta_gradient_matches_finite_differences(tiny):
    model, loss, (sx, sy, qx, qy) = tiny
    theta, lam = detached(model), 0.7
    meta_grad, update, metrics = ConvexIMAML("convex_imaml", steps=3, lr=1.0, lam=lam).task(theta, loss, sx, sy, qx, qy)
    assert metrics["inner_residual"].item() < 1e-10

    def query_at_solution(t: dict) -> float:
        w, b = ridge_head(t, sx, sy, lam)
        return F.mse_loss(mlp({**t, "head.weight": w, "head.bias": b}, qx), qy).item()

    for seed in range(4):
        analytic, numeric = directional_check(meta_grad, query_at_solution, theta, seed, eps=1e-6)
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric)), (analytic, numeric)
    w, b = ridge_head(theta, sx, sy, lam)
    torch.testing.assert_close(update["head.weight"], theta["head.weight"] - w)
    assert all(update[k].abs().max() == 0 for k in theta if k.startswith("body."))


def test_structured_head_hessian_equals_the_generic_one():
    """The Kronecker-structured Hessian of the linear head equals torch.func.hessian, for MSE and cross-entropy."""
    g = torch.Generator().manual_seed(0)
    a = torch.cat([torch.randn(9, 4, generator=g, dtype=torch.float64), torch.ones(9, 1, dtype=torch.float64)], 1)
    cases = [(F.mse_loss, 1, torch.randn(9, 1, generator=g, dtype=torch.float64)),
             (F.mse_loss, 3, torch.randn(9, 3, generator=g, dtype=torch.float64)),
             (F.cross_entropy, 5, torch.randint(0, 5, (9,), generator=g))]
    for criterion, outputs, y in cases:
        m = torch.randn(outputs, 5, generator=g, dtype=torch.float64)
        objective = type("Criterion", (), {"criterion": staticmethod(criterion)})()
        structured = ConvexIMAML("convex_imaml", 1, 1.0).hessian(objective, m, a, y)
        generic = hessian(lambda t, c=criterion, y=y: c(a @ t.T, y))(m).reshape(m.numel(), m.numel())
        torch.testing.assert_close(structured, generic, rtol=1e-10, atol=1e-12)
