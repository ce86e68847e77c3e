"""Which rank a process is, read from its launcher's environment without torch (metarun.ranks): torchrun's
variables first, then a Slurm step's, and rank 0 for a process on its own."""

from __future__ import annotations

import pytest

from metarun.ranks import rank, slurm_tasks


@pytest.mark.parametrize(("env", "expected"), [
    ({}, 0),
    ({"RANK": "3", "WORLD_SIZE": "4"}, 3),
    # torchrun inside a Slurm allocation: torchrun's rank, not the Slurm task's.
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}, 1),
    ({"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4"}, 2),
    # One task per step (a Hydra submitit sweep's jobs): each is a run of its own, rank 0 whatever its PROCID.
    ({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "1"}, 0),
])
def test_rank_from_the_launchers_environment(env, expected):
    assert rank(env) == expected


def test_slurm_tasks_outside_slurm_is_one():
    assert slurm_tasks({}) == 1 and slurm_tasks({"SLURM_STEP_NUM_TASKS": "8"}) == 8


def test_rank_zero_is_what_commands_print_from(monkeypatch):
    from metarun.commands.exits import rank_zero

    monkeypatch.setenv("RANK", "1")
    assert not rank_zero()
    monkeypatch.setenv("RANK", "0")
    assert rank_zero()
