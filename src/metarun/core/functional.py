"""Parameters as `dict[str, Tensor]`, the model as a pure function of them, tree arithmetic."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metarun.models import TaskBatchNorm

Params = dict[str, Tensor]
Criterion = Callable[[Tensor, Tensor], Tensor]


class Objective:
    """A model and its criterion as pure functions of a parameter dict.

    Models name their parts `body` (features) and `head` (the final linear layer), so the
    convex methods can adapt the head alone on features computed once.
    """

    def __init__(self, model: nn.Module, criterion: Criterion, transductive: bool = True) -> None:
        self.model = model
        self.criterion = criterion
        self.names = frozenset(k for k, _ in model.named_parameters())
        self.head_names = tuple(k for k, _ in model.named_parameters() if k.startswith("head."))
        norms = [(name, m) for name, m in model.named_modules()
                 if isinstance(m, (nn.modules.batchnorm._NormBase, TaskBatchNorm))]
        self.norm_names = tuple(f"{name}.{k}" for name, m in norms for k, _ in m.named_parameters())
        # Only BatchNorm makes one example's output depend on the rest of its batch.
        self.has_batchnorm = bool(norms)
        self.transductive = transductive or not self.has_batchnorm

    def predict(self, params: Params, x: Tensor, **kwargs: Tensor) -> Tensor:
        if len(params) > len(self.names):  # an algorithm's own meta-parameters ride along: not the network's
            params = {k: v for k, v in params.items() if k in self.names}
        return functional_call(self.model, params, (x,), kwargs)

    def predict_query(self, params: Params, sx: Tensor, qx: Tensor, **kwargs: Tensor) -> Tensor:
        """Query predictions at test time: BatchNorm uses the query batch's statistics
        (transductive), or the support set's alone, each query example on its own."""
        if self.transductive:
            return self.predict(params, qx, **kwargs)
        n = sx.shape[0]
        return self.predict(params, torch.cat([sx, qx]), stats_from=n, **kwargs)[n:]

    def __call__(self, params: Params, x: Tensor, y: Tensor, **kwargs: Tensor) -> Tensor:
        return self.criterion(self.predict(params, x, **kwargs), y)

    def features(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.model.body, _strip(params, "body."), (x,))

    def head_loss(self, head: Params, features: Tensor, y: Tensor) -> Tensor:
        return self.criterion(functional_call(self.model.head, _strip(head, "head."), (features,)), y)

    def split(self, params: Params) -> tuple[Params, Params]:
        """(body, head): every parameter but the head's, and the head's."""
        head = {k: params[k] for k in self.head_names}
        return {k: v for k, v in params.items() if k not in head}, head


def _strip(params: Params, prefix: str) -> Params:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def detached(model: nn.Module) -> Params:
    """The model's parameters, cut from the module's autograd graph (the transforms own the math)."""
    return {k: v.detach() for k, v in model.named_parameters()}


def subtract(a: Params, b: Params) -> Params:
    return {k: a[k] - b[k] for k in a}


def step(params: Params, direction: Params, lr: float | Tensor) -> Params:
    """params - lr * direction."""
    return {k: params[k] - lr * direction[k] for k in params}


def dot(a: Params, b: Params) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def zeros_like(tree: Params) -> Params:
    return {k: torch.zeros_like(v) for k, v in tree.items()}


def ravel(tree: Params) -> tuple[Tensor, Callable[[Tensor], Params]]:
    """One flat vector, and the function that cuts such a vector back into the tree's shapes."""
    shapes = {k: v.shape for k, v in tree.items()}
    flat = torch.cat([v.reshape(-1) for v in tree.values()])

    def unravel(vector: Tensor) -> Params:
        out, start = {}, 0
        for k, shape in shapes.items():
            n = shape.numel()
            out[k] = vector[start:start + n].reshape(shape)
            start += n
        return out

    return flat, unravel


def flatten(tree: Params) -> Tensor:
    """[T, *shape] leaves -> [T, P]: one row per task."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in tree.values()], dim=1)


def weighted_sum(weights: Tensor, tree: Params) -> Params:
    """sum_i w_i * tree_i over the leading task dimension, on the tree's device and in its dtype."""
    return {k: torch.tensordot(weights.to(v.device, v.dtype), v, dims=1) for k, v in tree.items()}
