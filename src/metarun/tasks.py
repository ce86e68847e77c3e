"""Episodes: a batch of tasks as stacked support and query tensors, and seeded task streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import torch
from torch import Tensor


class Episode(NamedTuple):
    """T tasks: support_x [T, S, ...], support_y [T, S, ...], query_x [T, Q, ...], query_y [T, Q, ...]."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def to(self, device: torch.device) -> Episode:
        return Episode(*(t.to(device) for t in self))

    def __len__(self) -> int:  # type: ignore[override]
        return self.support_x.shape[0]


class TaskSource(Protocol):
    def sample(self, tasks: int, shots: int, queries: int, generator: torch.Generator) -> Episode: ...


def fixed_stream(
    source: TaskSource, n_tasks: int, chunk: int, shots: int, queries: int, seed: int
) -> Iterator[Episode]:
    """The same n_tasks for every caller with this seed, in chunks: every method sees the same tasks."""
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < n_tasks:
        size = min(chunk, n_tasks - done)
        yield source.sample(size, shots, queries, generator)
        done += size
