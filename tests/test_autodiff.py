"""The per-task loop differentiates with plain autograd; it must give torch.func's numbers exactly."""

from __future__ import annotations

import pytest
import torch

from metarun.core import autodiff
from metarun.run.execution import task_grads
from test_execution import ALGOS, problem


def torch_func_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every gradient of metarun.core.autodiff torch.func's, as before the plain-autograd path existed."""
    monkeypatch.setattr(autodiff, "inside_transform", lambda: True)


@pytest.mark.parametrize("name", ALGOS)
def test_plain_autograd_equals_torch_func_float64(name, monkeypatch):
    theta, loss, episode = problem(torch.float64, name)
    algo = ALGOS[name]()
    plain = task_grads(algo, theta, loss, episode, "loop", diagnose=True)
    torch_func_everywhere(monkeypatch)
    ref = task_grads(algo, theta, loss, episode, "loop", diagnose=True)
    for field in ("meta_grads", "updates", "metrics"):
        assert getattr(plain, field).keys() == getattr(ref, field).keys()
        for k, v in getattr(ref, field).items():
            torch.testing.assert_close(getattr(plain, field)[k], v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["maml", "fomaml", "imaml", "cavia", "convex_maml"])
def test_outermost_results_hold_no_graph(name):
    # A graph left on a per-task result would keep that task's activations alive for the whole batch.
    theta, loss, episode = problem(torch.float64, name)
    grads = task_grads(ALGOS[name](), theta, loss, episode, "loop", diagnose=True)
    for tree in grads:
        for k, v in tree.items():
            assert v.grad_fn is None and not v.requires_grad, k


def test_nested_gradient_is_differentiable_and_outer_is_not():
    # d/dx of (d/dx x^3 = 3x^2) = 6x: the inner gradient must keep its graph while the outer one records.
    x = {"x": torch.tensor(3.0, dtype=torch.float64)}
    inner = autodiff.grad(lambda p: p["x"] ** 3)
    outer, value = autodiff.grad(lambda p: (lambda g: (g["x"], g["x"]))(inner(p)), has_aux=True)(x)
    assert outer["x"].item() == pytest.approx(18.0) and value.item() == pytest.approx(27.0)
    assert not outer["x"].requires_grad and not value.requires_grad
    assert not x["x"].requires_grad  # the caller's tensors are left as they were
