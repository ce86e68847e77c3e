"""The inner loop: K steps on one task's support set, as a pure function of the parameters.

Gradients come from `metarun.autodiff.grad` (torch.func's meaning, plain autograd outside its
transforms), so the same code is differentiable when an outer gradient wraps it (MAML) and
graph-free when nothing does (FOMAML, Reptile, evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metarun.autodiff import grad
from metarun.functional import Params, step

Objective = Callable[[Params], Tensor]


def sgd(params: Params, objective: Objective, steps: int, lr: float) -> Params:
    for _ in range(steps):
        params = step(params, grad(objective)(params), lr)
    return params


def adam(
    params: Params,
    objective: Objective,
    steps: int,
    lr: float,
    betas: tuple[float, float] = (0.0, 0.999),
    eps: float = 1e-8,
) -> Params:
    """Adam with fresh state per task; Reptile's paper uses beta1 = 0."""
    b1, b2 = betas
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    for t in range(1, steps + 1):
        g = grad(objective)(params)
        m = {k: b1 * m[k] + (1 - b1) * g[k] for k in g}
        v = {k: b2 * v[k] + (1 - b2) * g[k] ** 2 for k in g}
        direction = {
            k: (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps) for k in g
        }
        params = step(params, direction, lr)
    return params


Minimizer = Callable[[Params, Objective, int, float], Params]


def optimizer(name: str, adam_betas: Sequence[float] = (0.9, 0.999)) -> Minimizer:
    """The inner optimiser by name: `sgd`, or `adam` with these betas (fresh state per task)."""
    if name == "sgd":
        return sgd
    if name == "adam":
        betas = (float(adam_betas[0]), float(adam_betas[1]))
        return lambda params, objective, steps, lr: adam(params, objective, steps, lr, betas)
    raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {name!r}")
