"""The inner loop: K steps on one task's support set, as a pure function of the parameters.

Gradients come from `metarun.core.autodiff.grad` (torch.func's meaning, plain autograd outside its
transforms), so the same code is differentiable when an outer gradient wraps it (MAML) and
graph-free when nothing does (FOMAML, Reptile, evaluation). A loss is one function of the
parameters, or a sequence of them (the support set's sub-batches): step i then descends
loss i mod k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from metarun.core.autodiff import grad
from metarun.core.functional import Params, step

# One function of the parameters to descend (a support loss), or a sequence of them taken in turn.
Loss = Callable[[Params], Tensor]
Losses = Loss | Sequence[Loss]


def at(losses: Losses, i: int) -> Loss:
    """The loss step i descends."""
    if callable(losses):
        return losses
    return losses[i % len(losses)]


def sgd(params: Params, loss: Losses, steps: int, lr: float) -> Params:
    for i in range(steps):
        params = step(params, grad(at(loss, i))(params), lr)
    return params


class AdamState(NamedTuple):
    """Adam's moment estimates and step count: what the official Reptile code carries from task to task."""

    m: Params
    v: Params
    t: int

    @staticmethod
    def fresh(params: Params) -> AdamState:
        return AdamState({k: torch.zeros_like(p) for k, p in params.items()},
                         {k: torch.zeros_like(p) for k, p in params.items()}, 0)


def adam_steps(
    params: Params,
    loss: Losses,
    steps: int,
    lr: float,
    state: AdamState,
    betas: tuple[float, float] = (0.0, 0.999),
    eps: float = 1e-8,
) -> tuple[Params, AdamState]:
    """`steps` Adam steps from `state`; returns the parameters and the state after them."""
    b1, b2 = betas
    m, v, t0 = state
    for i in range(steps):
        t = t0 + i + 1
        g = grad(at(loss, i))(params)
        m = {k: b1 * m[k] + (1 - b1) * g[k] for k in g}
        v = {k: b2 * v[k] + (1 - b2) * g[k] ** 2 for k in g}
        direction = {
            k: (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps) for k in g
        }
        params = step(params, direction, lr)
    return params, AdamState(m, v, t0 + steps)


def adam(
    params: Params,
    loss: Losses,
    steps: int,
    lr: float,
    betas: tuple[float, float] = (0.0, 0.999),
    eps: float = 1e-8,
) -> Params:
    """Adam with fresh state per task; Reptile's paper uses beta1 = 0."""
    return adam_steps(params, loss, steps, lr, AdamState.fresh(params), betas, eps)[0]


Minimizer = Callable[[Params, Losses, int, float], Params]


def optimizer(name: str, adam_betas: Sequence[float] = (0.9, 0.999)) -> Minimizer:
    """The inner optimiser by name: `sgd`, or `adam` with these betas (fresh state per task)."""
    if name == "sgd":
        return sgd
    if name == "adam":
        betas = (float(adam_betas[0]), float(adam_betas[1]))
        return lambda params, loss, steps, lr: adam(params, loss, steps, lr, betas)
    raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {name!r}")
