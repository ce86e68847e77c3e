"""Linear solvers for implicit meta-gradients, on parameter trees, matrix-free.

Fixed iteration counts and no data-dependent branches, so they run unchanged under `vmap`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metarun.core.functional import Params, dot, zeros_like

MatVec = Callable[[Params], Params]


def conjugate_gradient(matvec: MatVec, b: Params, steps: int) -> Params:
    """Approximately solve A x = b for a symmetric positive-definite A given as x -> A x.

    Starts from x = 0; after n steps on an n-dimensional problem it is exact up to
    round-off. A residual that reaches exactly zero stops the updates (no 0/0).
    """
    x, r = zeros_like(b), dict(b)
    p, rs = dict(r), dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        alpha = _safe_ratio(rs, dot(p, ap))
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * ap[k] for k in r}
        rs_new = dot(r, r)
        beta = _safe_ratio(rs_new, rs)
        p = {k: r[k] + beta * p[k] for k in p}
        rs = rs_new
    return x


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
