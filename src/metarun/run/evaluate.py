"""Meta-test: adapt to each held-out task with the test-time inner loop, score its query set."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from metarun.algorithms import Algorithm
from metarun.core.distributed import SOLO, World
from metarun.core.functional import Objective, Params
from metarun.core.tasks import Episode
from metarun.run.execution import Executor

if TYPE_CHECKING:
    from metarun.run.build import Parts

Score = Callable[[Tensor, Tensor], Tensor]


def evaluate(parts: Parts, episodes: Iterable[Episode], steps: int, lr: float) -> tuple[Tensor, Tensor]:
    """Per-task scores after and before adaptation (on the CPU, float64) over every task of `episodes`, for
    a run's parts as they stand."""
    return scores(parts.algo, parts.theta(), parts.objective, parts.source.score, episodes, steps, lr,
                  parts.executor, parts.world)


def scores(algo: Algorithm, theta: Params, objective: Objective, score: Score, episodes: Iterable[Episode],
           steps: int, lr: float, executor: Executor, world: World = SOLO) -> tuple[Tensor, Tensor]:
    """Per-task scores after and before adaptation (on the CPU, float64) over every task of `episodes`.

    "Before" is the query score of theta itself (zero adaptation steps), for diagnosis. The tasks run as
    the executor says (loop or vmap, chunks of `exec.chunk=auto` evaluation tasks per call). Across ranks
    each rank adapts its contiguous share of every episode and the scores are gathered in task order, so every
    rank returns the whole stream's scores, the same as one process.
    """

    def predictions(sx: Tensor, sy: Tensor, qx: Tensor) -> tuple[Tensor, Tensor]:
        return (algo.predict(theta, objective, sx, sy, qx, steps, lr),
                algo.predict(theta, objective, sx, sy, qx, 0, lr))

    after, before = [], []
    for episode in episodes:
        tasks = len(episode)
        split = 1 < world.size <= tasks  # an episode of fewer tasks than ranks: each rank adapts all of them
        share = world.share(tasks) if split else slice(None)
        sx, sy, qx, qy = (t[share] for t in episode.to(executor.device))
        adapted, unadapted = executor.over_tasks(predictions, (sx, sy, qx))
        for out, s in ((after, score(adapted, qy)), (before, score(unadapted, qy))):
            out.append(world.gather(s.detach(), tasks) if split else s.detach())
    # Scores stay on the device until the end: one copy to the host, not one (and a GPU sync) per batch.
    return tuple(torch.cat(s).to("cpu", torch.float64) for s in (after, before))
