"""run/heap.py: with the thresholds fixed, the buffers a step frees are reused by the next without page faults.

In a subprocess: the allocator's settings are process-wide, and a test must not leave them changed."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import torch
from metarun.run.heap import keep_freed_memory

applied = keep_freed_memory() if sys.argv[1] == "kept" else False

def step():
    # A step's worth of activations: 8 buffers of 16 MB, written, then all freed.
    buffers = [torch.empty(4 * 2**20) for _ in range(8)]
    for b in buffers:
        b.fill_(1.0)

faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""
PAGES = 8 * 16 * 2**20 // 4096  # pages a step writes


def faults(mode: str) -> tuple[str, list[int]]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}, check=True).stdout.split()
    return out[0], [int(n) for n in out[1:]]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_buffers_are_reused_without_page_faults():
    applied, per_step = faults("kept")
    assert applied == "True"  # mallopt took both thresholds
    # The first steps place the buffers (a small allocation in between can push one or two past the pages touched
    # before); from the fourth on, every step writes into pages an earlier one touched. Without the fixed
    # thresholds most processes fault every page on every step (32,736 of 32,768 measured), some settle as here.
    settled = per_step[3:]
    assert max(settled) < PAGES // 20, f"page faults per step {per_step}, for steps of {PAGES} pages"
