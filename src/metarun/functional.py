"""Parameters as `dict[str, Tensor]`, the model as a pure function of them, tree arithmetic."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
Loss = Callable[[Params, Tensor, Tensor], Tensor]


def detached(model: nn.Module) -> Params:
    """The model's parameters, cut from the module's autograd graph (the transforms own the math)."""
    return {k: v.detach() for k, v in model.named_parameters()}


def forward(model: nn.Module) -> Callable[[Params, Tensor], Tensor]:
    def apply(params: Params, x: Tensor) -> Tensor:
        return functional_call(model, params, (x,))

    return apply


def loss_of(model: nn.Module, criterion: Callable[[Tensor, Tensor], Tensor]) -> Loss:
    """`loss(params, x, y)`: the criterion of the model's predictions with these parameters."""
    apply = forward(model)

    def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return criterion(apply(params, x), y)

    return loss


def subtract(a: Params, b: Params) -> Params:
    return {k: a[k] - b[k] for k in a}


def step(params: Params, direction: Params, lr: float) -> Params:
    """params - lr * direction."""
    return {k: params[k] - lr * direction[k] for k in params}


def flatten(tree: Params) -> Tensor:
    """[T, *shape] leaves -> [T, P]: one row per task."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in tree.values()], dim=1)


def weighted_sum(weights: Tensor, tree: Params) -> Params:
    """sum_i w_i * tree_i over the leading task dimension."""
    return {k: torch.tensordot(weights.to(v.dtype), v, dims=1) for k, v in tree.items()}
