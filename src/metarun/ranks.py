"""Which process of a run this is, as its launcher's environment says: torchrun (RANK, WORLD_SIZE) or a
Slurm job step of several tasks (SLURM_PROCID, SLURM_STEP_NUM_TASKS). Read without torch, so that a
command can tell whether it is rank 0 (the one that prints) before anything slow is imported."""

from __future__ import annotations

import os
from collections.abc import Mapping


def slurm_tasks(env: Mapping[str, str] | None = None) -> int:
    """How many tasks this process's Slurm job step runs (1 outside Slurm)."""
    return int((os.environ if env is None else env).get("SLURM_STEP_NUM_TASKS", "1"))


def rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank among the run's: torchrun's RANK, else its task in a Slurm step of several; 0 alone."""
    env = os.environ if env is None else env
    if "RANK" in env:
        return int(env["RANK"])
    return int(env.get("SLURM_PROCID", "0")) if slurm_tasks(env) > 1 else 0
