"""Meta-gradients against references computed another way (float64).

The reference is a plain MLP written out by hand with `torch.autograd`, independent of the
`torch.func` code under test.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metarun.algorithms.fomaml import FOMAML
from metarun.algorithms.maml import MAML
from metarun.algorithms.reptile import Reptile
from metarun.functional import detached

LR = 0.3


def mlp(p: dict, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(x @ p["net.0.weight"].T + p["net.0.bias"])
    return h @ p["net.2.weight"].T + p["net.2.bias"]


def plain_sgd(p: dict, x, y, steps: int, lr: float, create_graph: bool = False) -> dict:
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(mlp(p, x), y), list(p.values()), create_graph=create_graph)
        p = {k: v - lr * g for (k, v), g in zip(p.items(), grads, strict=True)}
    return p


def leaf(v: torch.Tensor) -> torch.Tensor:
    return v.detach().clone().requires_grad_()


def leaves(theta: dict) -> dict:
    return {k: leaf(v) for k, v in theta.items()}


def post_adaptation_query_loss(theta: dict, task, steps: int) -> float:
    sx, sy, qx, qy = task
    phi = plain_sgd(leaves(theta), sx, sy, steps, LR)
    return F.mse_loss(mlp(phi, qx), qy).item()


def central_differences(theta: dict, task, steps: int, eps: float = 1e-6) -> dict:
    out = {}
    for k, v in theta.items():
        g = torch.zeros_like(v)
        for i in range(v.numel()):
            bump = torch.zeros_like(v)
            bump.view(-1)[i] = eps
            plus = post_adaptation_query_loss({**theta, k: v + bump}, task, steps)
            minus = post_adaptation_query_loss({**theta, k: v - bump}, task, steps)
            g.view(-1)[i] = (plus - minus) / (2 * eps)
        out[k] = g
    return out


def relative_error(a: dict, b: dict) -> float:
    num = sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5
    den = sum((b[k] ** 2).sum() for k in b) ** 0.5
    return float(num / den)


def test_maml_meta_gradient_matches_finite_differences(tiny):
    model, loss, task = tiny
    theta = detached(model)
    meta_grad, _, _ = MAML("maml", steps=2, lr=LR).task(theta, loss, *task)
    reference = central_differences(theta, task, steps=2)
    assert relative_error(meta_grad, reference) < 1e-6
    # The check can tell a missing second-order term: the first-order answer is far off.
    first_order, _, _ = FOMAML("fomaml", steps=2, lr=LR).task(theta, loss, *task)
    assert relative_error(first_order, reference) > 1e-3


def test_fomaml_is_query_gradient_at_adapted_parameters(tiny):
    model, loss, (sx, sy, qx, qy) = tiny
    theta = detached(model)
    meta_grad, update, metrics = FOMAML("fomaml", steps=3, lr=LR).task(theta, loss, sx, sy, qx, qy)
    phi = {k: v.detach().requires_grad_() for k, v in plain_sgd(leaves(theta), sx, sy, 3, LR).items()}
    query = F.mse_loss(mlp(phi, qx), qy)
    reference = dict(zip(phi, torch.autograd.grad(query, list(phi.values())), strict=True))
    for k in theta:
        torch.testing.assert_close(meta_grad[k], reference[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(update[k], theta[k] - phi[k].detach(), rtol=1e-10, atol=1e-12)
    assert metrics["loss_after"].item() == pytest.approx(query.item(), rel=1e-12)


def test_reptile_sgd_is_displacement_of_hand_unrolled_loop(tiny):
    model, loss, (sx, sy, qx, qy) = tiny
    theta = detached(model)
    meta_grad, update, _ = Reptile("reptile", steps=4, lr=LR).task(theta, loss, sx, sy, qx, qy)
    phi = plain_sgd(leaves(theta), sx, sy, 4, LR)
    for k in theta:
        torch.testing.assert_close(meta_grad[k], theta[k] - phi[k].detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(update[k], meta_grad[k])


def test_reptile_adam_matches_hand_unrolled_adam(tiny):
    model, loss, (sx, sy, qx, qy) = tiny
    theta = detached(model)
    b2, eps, lr, steps = 0.999, 1e-8, 0.01, 4
    meta_grad, _, _ = Reptile("reptile", steps=steps, lr=lr, inner_optimizer="adam",
                              adam_betas=(0.0, b2)).task(theta, loss, sx, sy, qx, qy)
    # Adam with beta1 = 0: the step is g / (sqrt(v_hat) + eps).
    p, v = leaves(theta), {k: torch.zeros_like(t) for k, t in theta.items()}
    for t in range(1, steps + 1):
        grads = dict(zip(p, torch.autograd.grad(F.mse_loss(mlp(p, sx), sy), list(p.values())), strict=True))
        v = {k: b2 * v[k] + (1 - b2) * grads[k] ** 2 for k in p}
        p = {k: leaf(p[k] - lr * grads[k] / ((v[k] / (1 - b2**t)).sqrt() + eps)) for k in p}
    for k in theta:
        torch.testing.assert_close(meta_grad[k], theta[k] - p[k].detach(), rtol=1e-10, atol=1e-12)
