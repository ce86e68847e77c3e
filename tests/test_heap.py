"""run/heap.py: with the thresholds fixed, buffers a step frees are reused by the next without page faults.

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

step()
step()  # whatever the allocator settles into after one step
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 8 * 16 * 2**20 // 4096  # pages the step writes


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_buffers_are_reused_without_page_faults():
    applied, kept = faults("kept")
    assert applied == "True"
    # Each 16 MB buffer is above glibc's default mapping threshold at first: unfixed, the buffers are mapped and
    # unmapped on every step and each page faults again; fixed, the third step writes into the second's pages.
    assert kept < PAGES // 20, f"{kept} page faults for a step of {PAGES} pages"
