"""Episodes: a batch of tasks as stacked support and query tensors, and seeded task streams."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor


class Episode(NamedTuple):
    """T tasks: support_x [T, S, ...], support_y [T, S, ...], query_x [T, Q, ...], query_y [T, Q, ...]."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def to(self, device: torch.device) -> Episode:
        return Episode(*(to_device(t, device) for t in self))

    def __len__(self) -> int:  # type: ignore[override]
        return self.support_x.shape[0]


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """`t` on `device`. From the CPU to a GPU the copy goes through pinned memory and does not wait: a copy
    from ordinary (pageable) memory waits for all the GPU's queued work first, a host sync per call."""
    if device.type == "cuda" and t.device.type == "cpu" and torch.cuda.is_available():
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class TaskSource(Protocol):
    """Where a run's tasks come from: every member the training loop, evaluation and the results use.

    `split` is train, val or test; regression ignores it and `ways` (tasks are drawn afresh).
    """

    name: str  # what results.json and tables call the dataset
    kind: str  # regression | classification
    metric: str  # the test score's name: mse, accuracy
    higher_is_better: bool

    def setup(self, device: torch.device, ways: int, train: tuple[int, int], test: tuple[int, int],
              validate: bool = True) -> None:
        """Load (or prepare) the data on `device`, after checking that episodes of `ways` classes with
        (shots, queries) `train` and `test` examples can be drawn from it."""
        ...

    def sample(
        self, split: str, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator
    ) -> Episode: ...

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The training criterion, a mean over examples."""
        ...

    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Per-task test scores [T] from predictions [T, Q, ...] and targets [T, Q, ...]."""
        ...

    def record(self) -> dict[str, Any]:
        """What results.json says about the data beyond its name."""
        ...


def fixed_stream(
    source: TaskSource, split: str, n_tasks: int, chunk: int, ways: int, shots: int, queries: int, seed: int
) -> Iterator[Episode]:
    """The same n_tasks for every caller with this seed, in chunks: every method sees the same tasks."""
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < n_tasks:
        size = min(chunk, n_tasks - done)
        yield source.sample(split, size, ways, shots, queries, generator)
        done += size


class ClassEpisodes:
    """N-way K-shot Q-query episodes over `images` [classes, per_class, C, H, W] (uint8, on the device).

    Indices are drawn on the CPU from the caller's generator (so a seed gives the same
    tasks on every device); the images are gathered on the device in one indexing op.
    Each task's classes come in random order, so labels 0..N-1 are permuted per task.
    """

    def __init__(self, images: Tensor) -> None:
        if images.dim() != 5 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [classes, per_class, C, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images

    @property
    def classes(self) -> int:
        return self.images.shape[0]

    @property
    def per_class(self) -> int:
        return self.images.shape[1]

    def sample(self, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator) -> Episode:
        if ways > self.classes or shots + queries > self.per_class:
            raise ValueError(f"cannot draw {ways}-way {shots}+{queries} episodes from {tuple(self.images.shape[:2])}")
        classes = torch.rand(tasks, self.classes, generator=generator).argsort(dim=1)[:, :ways]
        picks = torch.rand(tasks, ways, self.per_class, generator=generator).argsort(dim=2)[..., :shots + queries]
        device = self.images.device
        return _episode(self.images[to_device(classes, device)[..., None], to_device(picks, device)], shots, queries)


class RaggedClassEpisodes:
    """The same episodes over classes of different sizes: `images` [total, C, H, W] holds the classes one
    after another, class c being the `counts[c]` images from offset sum(counts[:c]).

    A task's classes are drawn uniformly, whatever their sizes; from each, K + Q distinct images
    uniformly among the ones it has: a random key per slot up to the largest class, the slots past
    the class's own count keyed above any real key, and the K + Q smallest keys taken (a partial
    shuffle). That is tasks x ways x the largest class's size in random numbers per draw, on the
    CPU like the equal-size sampler's, and one gather on the device.
    """

    def __init__(self, images: Tensor, counts: Sequence[int]) -> None:
        counts = [int(c) for c in counts]
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [total, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if not counts or sum(counts) != images.shape[0] or min(counts) < 1:
            raise ValueError(f"counts must be positive and add up to the {images.shape[0]} images, got {counts}")
        self.images, self.per_class, self.largest = images, min(counts), max(counts)  # per_class: the smallest
        self.counts = torch.tensor(counts)
        self.offsets = self.counts.cumsum(0) - self.counts

    @property
    def classes(self) -> int:
        return self.counts.numel()

    def sample(self, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator) -> Episode:
        if ways > self.classes or shots + queries > self.per_class:
            raise ValueError(f"cannot draw {ways}-way {shots}+{queries} episodes from {self.classes} classes "
                             f"of {self.per_class} or more images")
        classes = torch.rand(tasks, self.classes, generator=generator).argsort(dim=1)[:, :ways]
        keys = torch.rand(tasks, ways, self.largest, generator=generator)
        keys.masked_fill_(torch.arange(self.largest) >= self.counts[classes][..., None], 2.0)
        picks = keys.topk(shots + queries, dim=2, largest=False).indices
        index = self.offsets[classes][..., None] + picks
        return _episode(self.images[to_device(index, self.images.device)], shots, queries)


def class_episodes(images: Tensor, counts: Sequence[int] | None = None) -> ClassEpisodes | RaggedClassEpisodes:
    """The sampler for a split: classes of equal size take the [classes, per_class, ...] fast path."""
    if counts is None:
        return ClassEpisodes(images)
    if len(set(counts)) == 1:
        return ClassEpisodes(images.view(len(counts), counts[0], *images.shape[1:]))
    return RaggedClassEpisodes(images, counts)


def _episode(x: Tensor, shots: int, queries: int) -> Episode:
    """x [T, N, K+Q, C, H, W] uint8 -> support and query sets in [0, 1], labels 0..N-1 by position."""
    tasks, ways = x.shape[:2]
    x = x.float().div_(255)
    labels = torch.arange(ways, device=x.device).view(1, ways, 1)

    def part(start: int, size: int) -> tuple[Tensor, Tensor]:
        xs = x[:, :, start:start + size].reshape(tasks, ways * size, *x.shape[3:])
        return xs, labels.expand(tasks, ways, size).reshape(tasks, ways * size)

    return Episode(*part(0, shots), *part(shots, queries))
