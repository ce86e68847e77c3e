"""Keep freed host memory in the process instead of giving it back to the system after every step (glibc).

A meta-step on a CPU allocates and frees the same large buffers every iteration (each task's activations
and their gradients). glibc's allocator moves its thresholds as a process runs: from some heap histories
it maps those buffers afresh, or trims the heap's top, on every step, and the next step touches the pages
again, one page fault per 4 KB. Measured on Omniglot 5-way 1-shot, meta-batch 32, one thread: 300,000 to
360,000 faults per step in some processes and none in others, about 10% of the step (FOMAML and MAML
alike), which is what made the same benchmark 0.78x learn2learn's speed in one process and 1.02x in the
next. With fixed thresholds the freed buffers stay in the heap for the next step: no faults, every process.

The cost: the process keeps the memory of its largest step, which it needs again at the next one anyway.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts: smaller allocations come from the heap, and stay in it
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the heap's top is given back only beyond 2 GB free


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds for this process (see the module); whether it applied (False off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    done = all(libc.mallopt(param, value) == 1 for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                                    (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    if not done:
        log.debug("mallopt refused the heap thresholds; the allocator keeps its defaults")
    return done
