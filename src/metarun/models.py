"""Plain modules; algorithms call them functionally with their own parameter dicts.

Every model has a `body` (features) and a `head` (the final linear layer): the convex
methods adapt the head alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metarun.config.schema import DOWNSAMPLES

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """in -> hidden... -> out with ReLU (MAML's sine regressor) or tanh (Reptile's sine demo) between layers.

    `context > 0` widens the input by a context vector that CAVIA adapts per task; it is
    passed as `forward(x, context=c)` and broadcast over the examples.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, context: int = 0,
                 activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        sizes = [in_features + context, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], out_features)
        self.context = context

    def forward(self, x: Tensor, stats_from: int = 0, context: Tensor | None = None) -> Tensor:
        # stats_from is accepted for a uniform signature: an MLP has no BatchNorm.
        if self.context:
            if context is None:
                raise ValueError(f"this MLP takes a context vector of size {self.context}; pass context=")
            x = torch.cat([x, context.expand(*x.shape[:-1], self.context)], dim=-1)
        return self.head(self.body(x))


class TaskBatchNorm(nn.Module):
    """BatchNorm over the current batch only (no running statistics), so it is a pure function.

    `stats_from=n` normalises the whole batch with the statistics of its first n examples:
    with the support set first, each query example is normalised with support statistics
    only (non-transductive evaluation). `stats_from=0` uses the whole batch (transductive,
    what MAML and Reptile do).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor, stats_from: int = 0) -> Tensor:
        # Under bf16 autocast the convolution before it hands over bf16: normalise in the parameters' float32,
        # as mixed precision keeps BatchNorm (vmapped gradients of mixed-dtype batch_norm fail on a CPU).
        x = x.to(self.weight.dtype)
        if not stats_from:
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        ref = x[:stats_from]
        mean = ref.mean(dim=(0, 2, 3), keepdim=True)
        var = ref.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.view(1, -1, 1, 1)


class Conv4Body(nn.Module):
    """Four blocks of 3x3 conv -> BatchNorm -> ReLU, downsampling each by a stride-2 conv (`stride`), a 2x2
    max-pool after the ReLU (`maxpool`, Finn et al.'s), or a 2x2 max-pool between the conv and the BatchNorm that
    keeps a last odd row and column (`pool_norm`: openai/supervised-reptile's miniImageNet block, whose
    TensorFlow 'same' pooling takes 84 -> 42 -> 21 -> 11 -> 6).

    `film_block` (CAVIA): a linear map (no bias) from the context vector to a per-channel scale and
    shift applied after that block's BatchNorm; the scale is 1 + the map, so a zero context
    leaves the network unchanged.
    """

    def __init__(self, in_channels: int, filters: int, downsample: str, features: str,
                 context: int = 0, film_block: int = 2) -> None:
        super().__init__()
        if downsample not in DOWNSAMPLES or features not in ("mean", "flatten"):
            raise ValueError(f"downsample must be {'|'.join(DOWNSAMPLES)}, features mean|flatten; got {downsample}, "
                             f"{features}")
        stride = 2 if downsample == "stride" else 1
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else filters, filters, 3, stride=stride, padding=1) for i in range(4)
        )
        self.norms = nn.ModuleList(TaskBatchNorm(filters) for _ in range(4))
        self.downsample, self.features, self.film_block = downsample, features, film_block
        self.film = nn.Linear(context, 2 * filters, bias=False) if context else None

    def forward(self, x: Tensor, stats_from: int = 0, context: Tensor | None = None) -> Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = conv(x)
            if self.downsample == "pool_norm":  # BatchNorm's statistics are then those of the pooled map
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = norm(x, stats_from)
            if self.film is not None and i == self.film_block:
                if context is None:
                    raise ValueError("this Conv4 takes a context vector (CAVIA); pass context=")
                scale, shift = self.film(context).view(2, -1, 1, 1)
                x = x * (1 + scale) + shift
            x = F.relu(x)
            if self.downsample == "maxpool":
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3)) if self.features == "mean" else x.flatten(1)


def conv4_feature_size(image_size: int, filters: int, downsample: str, features: str) -> int:
    size = image_size
    for _ in range(4):
        size = size // 2 if downsample == "maxpool" else (size - 1) // 2 + 1  # stride-2 conv, ceil-mode pool
    if size < 1:
        raise ValueError(f"image_size={image_size} is too small for four downsampling blocks")
    return filters if features == "mean" else filters * size * size


class Conv4(nn.Module):
    """The few-shot Conv4: `body` (four conv blocks) and a linear `head` over `out_features` classes.

    Finn et al. 2017: Omniglot 64 filters, stride-2 convs, features averaged over the final
    2x2 map; miniImageNet 32 filters with max-pooling, flattened. MAML++ uses 64 filters with
    max-pooling, flattened; Reptile on Omniglot the stride-2 network, flattened. The `model/`
    configs name these variants.
    """

    def __init__(self, in_channels: int, image_size: int, out_features: int, filters: int = 64,
                 downsample: str = "stride", features: str = "mean", context: int = 0) -> None:
        super().__init__()
        self.body = Conv4Body(in_channels, filters, downsample, features, context)
        self.head = nn.Linear(conv4_feature_size(image_size, filters, downsample, features), out_features)
        self.context = context

    def forward(self, x: Tensor, stats_from: int = 0, context: Tensor | None = None) -> Tensor:
        return self.head(self.body(x, stats_from, context))
