"""Meta-test: adapt to each held-out task with the test-time inner loop, score its query set."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.func import vmap

from metarun.algorithms import Algorithm
from metarun.functional import Objective, Params
from metarun.tasks import Episode

Score = Callable[[Tensor, Tensor], Tensor]


def evaluate(
    algo: Algorithm,
    theta: Params,
    objective: Objective,
    score: Score,
    episodes: Iterable[Episode],
    steps: int,
    lr: float,
    device: torch.device,
    mode: str = "vmap",
) -> Tensor:
    """Per-task scores (on the CPU, float64) over every task of `episodes`."""

    def adapted_predictions(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
        return algo.predict(theta, objective, sx, sy, qx, steps, lr)

    scores = []
    for episode in episodes:
        sx, sy, qx, qy = episode.to(device)
        if mode == "vmap":
            predictions = vmap(adapted_predictions)(sx, sy, qx)
        else:
            predictions = torch.stack([adapted_predictions(sx[i], sy[i], qx[i]) for i in range(len(sx))])
        scores.append(score(predictions, qy).detach().to("cpu", torch.float64))
    return torch.cat(scores)
