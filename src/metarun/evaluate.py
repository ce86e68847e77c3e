"""Meta-test: adapt to each held-out task with the test-time inner loop, score its query set."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import Tensor
from torch.func import vmap

from metarun.algorithms import Algorithm
from metarun.chunking import Chunking
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
    chunking: Chunking | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-task scores after and before adaptation (on the CPU, float64) over every task of `episodes`.

    "Before" is the query score of theta itself (zero adaptation steps), for diagnosis. In vmap
    mode `chunking` sets the tasks per call (default: a whole episode batch at once).
    """
    chunking = chunking or Chunking(0, device, mode, "evaluation")

    def predictions(sx: Tensor, sy: Tensor, qx: Tensor) -> tuple[Tensor, Tensor]:
        return (algo.predict(theta, objective, sx, sy, qx, steps, lr),
                algo.predict(theta, objective, sx, sy, qx, 0, lr))

    def batched(sx: Tensor, sy: Tensor, qx: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        return vmap(predictions, chunk_size=chunk or None)(sx, sy, qx)

    def looped(sx: Tensor, sy: Tensor, qx: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        return tuple(torch.stack(p) for p in zip(*(predictions(sx[i], sy[i], qx[i]) for i in range(len(sx))),
                                                  strict=True))

    after, before = [], []
    for episode in episodes:
        sx, sy, qx, qy = episode.to(device)
        adapted, unadapted = chunking.run(partial(batched if mode == "vmap" else looped, sx, sy, qx), len(sx))
        after.append(score(adapted, qy).detach())
        before.append(score(unadapted, qy).detach())
    # Scores stay on the device until the end: one copy to the host, not one (and a GPU sync) per batch.
    return tuple(torch.cat(scores).to("cpu", torch.float64) for scores in (after, before))
