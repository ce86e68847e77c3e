"""Sine-wave regression tasks, generated on the fly (no files)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from metarun.config.schema import SineData
from metarun.core.tasks import Episode
from metarun.data.fetching import Fetching, declare


class SineWaves:
    """y = a sin(x + b) with a ~ U[amplitude], b ~ U[phase], x ~ U[x_range] (Finn et al. 2017)."""

    kind = "regression"
    metric = "mse"
    higher_is_better = False

    def __init__(
        self, name: str, amplitude: Sequence[float], phase: Sequence[float], x_range: Sequence[float]
    ) -> None:
        self.name = name
        self.amplitude = tuple(amplitude)
        self.phase = tuple(phase)
        self.x_range = tuple(x_range)

    def setup(
        self, device: torch.device, ways: int, train: tuple[int, int], test: tuple[int, int],
        validate: bool = True,
    ) -> None:
        """Nothing to load: tasks are generated on the fly."""

    def record(self) -> dict:
        """What results.json should say about the data beyond its name."""
        return {"amplitude": list(self.amplitude), "phase": list(self.phase), "x_range": list(self.x_range)}

    def sample(
        self, split: str, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator
    ) -> Episode:
        a = _uniform((tasks, 1, 1), self.amplitude, generator)
        b = _uniform((tasks, 1, 1), self.phase, generator)
        x = _uniform((tasks, shots + queries, 1), self.x_range, generator)
        y = a * torch.sin(x + b)
        return Episode(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])

    @staticmethod
    def loss(prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target)

    @staticmethod
    def score(prediction: Tensor, target: Tensor) -> Tensor:
        """Per-task query MSE; prediction and target are [T, Q, 1]."""
        return ((prediction - target) ** 2).mean(dim=(1, 2))


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


@declare
class SineFetching(Fetching):
    name, target = SineData.name, SineData._target_
    summary = "generated on the fly: nothing to fetch"
