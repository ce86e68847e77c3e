"""Task weights from the per-task update vectors; independent of the algorithm that made them."""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.functional import Params, flatten


def uniform(updates: Params, check: bool = True) -> Tensor:
    """w_i = 1/T, on the updates' device (there is nothing to check)."""
    like = next(iter(updates.values()))
    return torch.full((like.shape[0],), 1.0 / like.shape[0], dtype=like.dtype, device=like.device)


class WeightingError(ValueError):
    """Weights that cannot be computed for this meta-batch; the message says why and what to change."""


def agreement(updates: Params, check: bool = True) -> Tensor:
    """Gradient agreement, Eshratifar et al. 2018, eq. 13.

    w_i = sum_j g_i.g_j / sum_k |sum_j g_k.g_j|. A task whose displacement disagrees with
    the batch's sum gets a negative weight, and sum_i |w_i| = 1.

    When every s_i is zero (every g is zero, or the g cancel exactly) the ratio is 0/0 and the
    tasks cannot be told apart. That is an error, not a quiet fall-back to uniform weights:
    results labelled `agreement` must have been weighted by agreement, and in practice it only
    happens when no inner loop moves the parameters, a set-up to fix rather than to average over.
    Testing for it reads the device from the host (a GPU sync), so the training loop passes
    `check=False`: the weights are then NaN, the combined gradient is not finite, and the loop,
    which tests that anyway, weighs again with the check to say why.
    """
    g = flatten(updates)
    s = g @ g.sum(dim=0)  # s_i = sum_j g_i.g_j without forming the T x T Gram matrix
    total = s.abs().sum()
    if check and total == 0:
        raise WeightingError(_undefined(g))
    return s / total


def _undefined(g: Tensor) -> str:
    what = "every task's vector is exactly zero" if not g.any() else "the tasks' vectors sum to exactly zero"
    return (f"`weighting=agreement` cannot weigh this meta-batch of {g.shape[0]} tasks: {what}, so the weights "
            "s_i / sum_k |s_k| are 0/0 and no task can be told from another. Check that the inner loop moves the "
            "parameters (`inner.lr`, `inner.steps`), compare other vectors with `weighting.vectors=...`, or use "
            "`weighting=uniform`.")


WEIGHTINGS = {"uniform": uniform, "agreement": agreement}


def weights(name: str, updates: Params, check: bool = True) -> Tensor:
    """The task weights, on the updates' device; `check=False` skips the checks that read the device (see agreement)."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](updates, check=check)
