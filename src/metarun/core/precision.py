"""Opt-in reduced precision on a GPU (`exec.tf32`, `exec.autocast`); off by default, so results stay float32.

PyTorch lets cuDNN convolutions use TF32 by default (`torch.backends.cudnn.allow_tf32` is True), so
"off" is set explicitly: a run with `exec.tf32=false` computes its convolutions and matrix products in
IEEE float32 on every GPU, as the papers' numbers were. The flags are set through the `allow_tf32` API:
torch 2.14's newer `fp32_precision` settings make the `allow_tf32` getters raise once they disagree,
and other code (torch.compile's, a user's) still reads those.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)
AUTOCAST = {"none": None, "bf16": torch.bfloat16}


def use_tf32(enabled: bool, device: torch.device) -> bool:
    """Set TF32 (or IEEE float32) for CUDA matrix products and convolutions; returns whether TF32 is in effect.

    The flags are the process's: a run sets both ways, so that no earlier setting leaks into it. On a CPU
    TF32 means nothing: the setting is ignored with a one-line note (a config that asks for it runs unchanged
    on a machine without a GPU), and the run computes in float32.
    """
    if device.type != "cuda":
        if enabled:
            log.warning("exec.tf32=true has no effect on %s (TF32 is a CUDA tensor-core format, Ampere or later); "
                        "this run computes in float32.", device)
        return False
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    if enabled and torch.cuda.get_device_capability(device) < (8, 0):
        log.warning("exec.tf32=true has no effect on %s (TF32 needs compute capability 8.0, Ampere, or later); this "
                    "run computes in float32.", torch.cuda.get_device_name(device))
        return False
    return enabled


def autocast(name: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward and backward passes of the tasks under `exec.autocast` (none, or bf16), on `device`'s type.

    Only the per-task computation runs under it: the task weights, their weighted sum and the optimiser
    step stay in float32, and so do the parameters and the meta-gradients (gradients of float32 leaves).
    """
    dtype = AUTOCAST[name]
    if dtype is None:
        return contextlib.nullcontext()
    # No cast cache: it keeps every leaf it cast alive until the block ends, and here each inner step makes new
    # parameters (and the plain-autograd loop new leaves per gradient), so nothing would be read from it twice.
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)
