"""Meta-gradients against references computed another way (float64).

The reference is a plain MLP written out by hand with `torch.autograd`, independent of the
`torch.func` code under test.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metarun.algorithms.cavia import CAVIA
from metarun.algorithms.convex_maml import ConvexMAML
from metarun.algorithms.fomaml import FOMAML
from metarun.algorithms.maml import MAML
from metarun.algorithms.reptile import Reptile
from metarun.core.functional import Objective, detached
from metarun.models import MLP

LR = 0.3


def mlp(p: dict, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(x @ p["body.0.weight"].T + p["body.0.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def plain_sgd(p: dict, x, y, steps: int, lr: float, only: tuple[str, ...] = ()) -> dict:
    """SGD with torch.autograd on every parameter, or on the `only` ones with the rest held fixed."""
    names = list(only or p)
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(mlp(p, x), y), [p[k] for k in names])
        p = {**p, **{k: p[k] - lr * g for k, g in zip(names, grads, strict=True)}}
    return p


def leaf(v: torch.Tensor) -> torch.Tensor:
    return v.detach().clone().requires_grad_()


def leaves(theta: dict) -> dict:
    return {k: leaf(v) for k, v in theta.items()}


def post_adaptation_query_loss(theta: dict, task, steps: int) -> float:
    sx, sy, qx, qy = task
    phi = plain_sgd(leaves(theta), sx, sy, steps, LR)
    return F.mse_loss(mlp(phi, qx), qy).item()


def central_differences(value_at, theta: dict, eps: float = 1e-6) -> dict:
    """d value_at / d theta, coordinate by coordinate."""
    out = {}
    for k, v in theta.items():
        g = torch.zeros_like(v)
        for i in range(v.numel()):
            bump = torch.zeros_like(v)
            bump.view(-1)[i] = eps
            g.view(-1)[i] = (value_at({**theta, k: v + bump}) - value_at({**theta, k: v - bump})) / (2 * eps)
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
    reference = central_differences(lambda t: post_adaptation_query_loss(t, task, steps=2), theta)
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


def head_only_query_loss(theta: dict, task, steps: int) -> float:
    """Reference for Convex MAML: SGD on the head alone, the body's features fixed per evaluation."""
    sx, sy, qx, qy = task
    phi = plain_sgd(leaves(theta), sx, sy, steps, LR, only=("head.weight", "head.bias"))
    return F.mse_loss(mlp(phi, qx), qy).item()


def test_convex_maml_meta_gradient_matches_finite_differences(tiny):
    model, loss, task = tiny
    theta = detached(model)
    meta_grad, update, _ = ConvexMAML("convex_maml", steps=3, lr=LR).task(theta, loss, *task)
    reference = central_differences(lambda t: head_only_query_loss(t, task, steps=3), theta)
    assert relative_error(meta_grad, reference) < 1e-6
    assert all(meta_grad[k].abs().max() > 0 for k in theta)  # the body is meta-learned too
    assert all(update[k].abs().max() == 0 for k in theta if k.startswith("body."))
    assert update["head.weight"].abs().max() > 0


def context_mlp(p: dict, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return mlp(p, torch.cat([x, c.expand(len(x), -1)], dim=1))


def cavia_query_loss(theta: dict, task, steps: int, lr: float, size: int) -> float:
    sx, sy, qx, qy = task
    c = torch.zeros(1, size, dtype=sx.dtype, requires_grad=True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(F.mse_loss(context_mlp(theta, sx, c), sy), [c])
        c = (c - lr * g).detach().requires_grad_()
    return F.mse_loss(context_mlp(theta, qx, c), qy).item()


def test_cavia_meta_gradient_matches_finite_differences(tiny):
    _, _, task = tiny
    torch.manual_seed(0)
    model = MLP(1, [6], 1, context=2).double()
    loss = Objective(model, F.mse_loss)
    theta = detached(model)
    meta_grad, update, _ = CAVIA("cavia", steps=2, lr=0.5, context_size=2).task(theta, loss, *task)
    reference = central_differences(lambda t: cavia_query_loss(t, task, 2, 0.5, 2), theta)
    assert relative_error(meta_grad, reference) < 1e-6
    assert all(update[k].abs().max() == 0 for k in theta)
    # Without the context steps the gradient is clearly different: the inner loop matters.
    no_adaptation = central_differences(lambda t: cavia_query_loss(t, task, 0, 0.5, 2), theta)
    assert relative_error(no_adaptation, reference) > 1e-2


def hand_adam(p: dict, x, y, steps: int, lr: float, state: tuple, betas=(0.5, 0.999), eps=1e-8, batches=1):
    """Adam with plain autograd from `state` = (m, v, t), step i on sub-batch i mod `batches`; returns (p, state)."""
    b1, b2 = betas
    m, v, t = state
    for i in range(steps):
        t += 1
        xs, ys = x[i % batches::batches], y[i % batches::batches]
        grads = dict(zip(p, torch.autograd.grad(F.mse_loss(mlp(p, xs), ys), list(p.values())), strict=True))
        m = {k: b1 * m[k] + (1 - b1) * grads[k] for k in p}
        v = {k: b2 * v[k] + (1 - b2) * grads[k] ** 2 for k in p}
        p = {k: leaf(p[k] - lr * (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps)) for k in p}
    return p, (m, v, t)


def tasks_of(seed: int, count: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        sx, qx = (torch.randn(n, 1, generator=g, dtype=torch.float64) for n in (6, 4))
        phase = torch.rand(1, generator=g, dtype=torch.float64)
        out.append((sx, torch.sin(sx + phase), qx, torch.sin(qx + phase)))
    return out


def test_reptile_carried_adam_matches_a_hand_written_loop(tiny):
    """The official code's inner Adam: moments and step count carried through the meta-batch and across
    iterations; every test task starts from the end-of-training state, which it leaves unchanged."""
    from metarun.core.tasks import Episode
    from metarun.run.execution import task_grads

    model, loss, _ = tiny
    theta = detached(model)
    steps, lr, betas = 3, 0.01, (0.5, 0.999)  # beta1 > 0 so that the first moment is carried too
    algo = Reptile("reptile", steps=steps, lr=lr, inner_optimizer="adam", adam_betas=betas, inner_state="carry",
                   sub_batches=2)
    state = ({k: torch.zeros_like(v) for k, v in theta.items()}, {k: torch.zeros_like(v) for k, v in theta.items()}, 0)
    for iteration in range(2):  # two meta-batches of three tasks, theta moved between them as the outer step would
        batch = tasks_of(iteration, 3)
        got = task_grads(algo, theta, loss, Episode(*(torch.stack(t) for t in zip(*batch, strict=True))), "loop",
                         diagnose=False)
        for i, (sx, sy, _, _) in enumerate(batch):
            phi, state = hand_adam(leaves(theta), sx, sy, steps, lr, state, betas, batches=2)
            for k in theta:
                torch.testing.assert_close(got.meta_grads[k][i], theta[k] - phi[k].detach(), rtol=1e-10, atol=1e-12)
        theta = {k: v - 0.5 * got.meta_grads[k].mean(0) for k, v in theta.items()}
    assert algo.state_dict()["adam_t"] == 2 * 3 * steps == state[2]

    # Test time: from the end-of-training state, on the whole support set, and the state is left as it was.
    sx, sy, _, _ = tasks_of(7, 1)[0]
    before = {k: v.clone() for k, v in algo.state_dict()["adam_m"].items()}
    adapted = algo.adapt(theta, loss, sx, sy, 4, lr)
    expected, _ = hand_adam(leaves(theta), sx, sy, 4, lr, tuple(s for s in state), betas)
    for k in theta:
        torch.testing.assert_close(adapted[k], expected[k].detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(algo.state_dict()["adam_m"][k], before[k], rtol=0, atol=0)
    assert algo.state_dict()["adam_t"] == 2 * 3 * steps
    # The check can tell a fresh state from a carried one.
    fresh = Reptile("reptile", steps=4, lr=lr, inner_optimizer="adam", adam_betas=betas)
    assert relative_error(fresh.adapt(theta, loss, sx, sy, 4, lr), adapted) > 1e-3


def sub_batched_query_loss(theta: dict, task, steps: int, batches: int) -> float:
    sx, sy, qx, qy = task
    p = leaves(theta)
    for i in range(steps):
        xs, ys = sx[i % batches::batches], sy[i % batches::batches]
        grads = torch.autograd.grad(F.mse_loss(mlp(p, xs), ys), list(p.values()))
        p = {k: p[k] - LR * g for k, g in zip(p, grads, strict=True)}
    return F.mse_loss(mlp(p, qx), qy).item()


def test_sub_batches_are_gradient_agreements_algorithm_1(tiny):
    """inner.sub_batches=k: step i of the training inner loop descends sub-batch i mod k (every k-th example)."""
    model, loss, task = tiny
    theta = detached(model)
    meta_grad, update, _ = MAML("maml", steps=3, lr=LR, sub_batches=2).task(theta, loss, *task)
    reference = central_differences(lambda t: sub_batched_query_loss(t, task, 3, 2), theta)
    assert relative_error(meta_grad, reference) < 1e-6
    whole = central_differences(lambda t: sub_batched_query_loss(t, task, 3, 1), theta)
    assert relative_error(whole, reference) > 1e-3  # the check can tell sub-batches from the whole set
    _, fo_update, _ = FOMAML("fomaml", steps=3, lr=LR, sub_batches=2).task(theta, loss, *task)
    displacement, _, _ = Reptile("reptile", steps=3, lr=LR, sub_batches=2).task(theta, loss, *task)
    for k in theta:
        torch.testing.assert_close(fo_update[k], update[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(displacement[k], update[k], rtol=1e-10, atol=1e-12)


def test_mlp_activation_tanh():
    torch.manual_seed(0)
    model = MLP(1, [6], 1, activation="tanh").double()
    p = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None]
    h = torch.tanh(x @ p["body.0.weight"].T + p["body.0.bias"])
    torch.testing.assert_close(model(x), h @ p["head.weight"].T + p["head.bias"], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="activation must be one of relu, tanh"):
        MLP(1, [6], 1, activation="gelu")
