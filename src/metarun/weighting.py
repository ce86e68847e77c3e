"""Task weights from the per-task update vectors; independent of the algorithm that made them."""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.functional import Params, flatten


def uniform(updates: Params) -> Tensor:
    """w_i = 1/T."""
    t = next(iter(updates.values())).shape[0]
    return torch.full((t,), 1.0 / t, dtype=next(iter(updates.values())).dtype)


def agreement(updates: Params) -> Tensor:
    """Gradient agreement, Eshratifar et al. 2018, eq. 13.

    w_i = sum_j g_i.g_j / sum_k |sum_j g_k.g_j|. A task whose displacement disagrees with
    the batch's sum gets a negative weight, and sum_i |w_i| = 1. When every g is zero the
    ratio is 0/0; the weights fall back to uniform.
    """
    g = flatten(updates)
    s = g @ g.sum(dim=0)  # s_i = sum_j g_i.g_j without forming the T x T Gram matrix
    total = s.abs().sum()
    if total == 0:
        return uniform(updates)
    return s / total


WEIGHTINGS = {"uniform": uniform, "agreement": agreement}


def weights(name: str, updates: Params) -> Tensor:
    try:
        return WEIGHTINGS[name](updates)
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}") from None
