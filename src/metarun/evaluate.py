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
) -> tuple[Tensor, Tensor]:
    """Per-task scores after and before adaptation (on the CPU, float64) over every task of `episodes`.

    "Before" is the query score of theta itself (zero adaptation steps), for diagnosis.
    """

    def predictions(sx: Tensor, sy: Tensor, qx: Tensor) -> tuple[Tensor, Tensor]:
        return (algo.predict(theta, objective, sx, sy, qx, steps, lr),
                algo.predict(theta, objective, sx, sy, qx, 0, lr))

    after, before = [], []
    for episode in episodes:
        sx, sy, qx, qy = episode.to(device)
        if mode == "vmap":
            adapted, unadapted = vmap(predictions)(sx, sy, qx)
        else:
            adapted, unadapted = (torch.stack(p) for p in zip(*(predictions(sx[i], sy[i], qx[i])
                                                                 for i in range(len(sx))), strict=True))
        after.append(score(adapted, qy).detach().to("cpu", torch.float64))
        before.append(score(unadapted, qy).detach().to("cpu", torch.float64))
    return torch.cat(after), torch.cat(before)
