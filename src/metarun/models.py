"""Plain modules; algorithms call them functionally with their own parameter dicts.

Every model has a `body` (features) and a `head` (the final linear layer): the convex
methods adapt the head alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """in -> hidden... -> out with ReLU between layers (the sine regressor of MAML and GA).

    `context > 0` widens the input by a context vector that CAVIA adapts per task; it is
    passed as `forward(x, context=c)` and broadcast over the examples.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, context: int = 0) -> None:
        super().__init__()
        sizes = [in_features + context, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], out_features)
        self.context = context

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context:
            if context is None:
                raise ValueError(f"this MLP takes a context vector of size {self.context}; pass context=")
            x = torch.cat([x, context.expand(*x.shape[:-1], self.context)], dim=-1)
        return self.head(self.body(x))
