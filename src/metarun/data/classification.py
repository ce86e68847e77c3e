"""What the image datasets share: cross-entropy, per-task accuracy, and episodes from per-split tensors."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from metarun.core.tasks import ClassEpisodes, Episode, RaggedClassEpisodes, class_episodes
from metarun.data.cache import DataError

SPLITS = ("train", "val", "test")


def check_request(
    dataset: str, sizes: dict[str, tuple[int, int]], ways: int, train: tuple[int, int], test: tuple[int, int],
    validate: bool = True,
) -> None:
    """Refuse episodes the splits cannot supply; `sizes` maps split -> (classes, images per class).

    The validation split is only asked for tasks when the run validates (`validate`).
    """
    for split, (classes, per_class) in sizes.items():
        if split == "val" and not validate:
            continue
        shots, queries = train if split == "train" else test
        keys = ("train.shots", "train.queries") if split == "train" else ("shots", "queries")
        if ways > classes:
            raise DataError(
                f"`ways={ways}` asks for more classes per task than the {dataset} {split} split has ({classes}). "
                f"Set `ways` to at most {classes}."
            )
        if shots + queries > per_class:
            raise DataError(
                f"`{keys[0]}={shots}` + `{keys[1]}={queries}` = {shots + queries} images per class, but every "
                f"{dataset} class has {per_class} images. Lower `{keys[1]}` (or `{keys[0]}`) so that they add "
                f"up to at most {per_class}."
            )


class ImageClasses:
    """N-way classification tasks over per-split class tensors that live on the run's device."""

    kind = "classification"
    metric = "accuracy"
    higher_is_better = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.splits: dict[str, ClassEpisodes | RaggedClassEpisodes] = {}

    def place(
        self, tensors: dict[str, Tensor], device: torch.device, counts: dict[str, list[int]] | None = None
    ) -> None:
        """Each split's images on the device: [classes, per_class, ...], or [total, ...] with its class `counts`."""
        counts = counts or {}
        self.splits = {split: class_episodes(t.to(device), counts.get(split)) for split, t in tensors.items()}

    def sample(
        self, split: str, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator
    ) -> Episode:
        if not self.splits:
            raise RuntimeError(f"{self.name}: call setup() before sampling")
        return self.splits[split].sample(tasks, ways, shots, queries, generator)

    def record(self) -> dict:
        """What results.json should say about the data beyond its name."""
        return {f"{split}_classes": s.classes for split, s in self.splits.items()}

    @staticmethod
    def loss(prediction: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(prediction, target)

    @staticmethod
    def score(prediction: Tensor, target: Tensor) -> Tensor:
        """Per-task query accuracy; prediction [T, Q, N] logits, target [T, Q] labels."""
        return (prediction.argmax(dim=-1) == target).to(torch.float64).mean(dim=1)
