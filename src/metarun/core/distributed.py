"""One run across processes with torch.distributed: started by torchrun or Slurm, one rank per process.

Every rank draws the same meta-batch from the run's generator and computes the TaskGrads of its
contiguous share of the tasks (`World.share`); the weighting reduces what it needs across the ranks
(weighting.base), and the weighted sum of meta-gradients is one all-reduce, so every rank steps the same
parameters with the same gradient and no parameter is ever broadcast. Evaluation is shared the same way
and its per-task scores are gathered in task order. Rank 0 alone writes the run's files.

Collectives on the training group time out after `exec.timeout` seconds (gloo raises, NCCL's watchdog
aborts the process); a rank that dies ends the others' collectives at once, and torchrun then stops the job.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from metarun.config.schema import ConfigError
from metarun.ranks import rank, slurm_tasks

BACKENDS = ("auto", "gloo", "nccl")


class RankFailed(RuntimeError):
    """A collective failed or timed out: another rank died or hangs. The message names this rank and the fix."""


@dataclass(frozen=True)
class Environment:
    """What the launcher says of this process: its rank among `size`, and on its node."""

    rank: int
    size: int
    local_rank: int
    local_size: int


def environment() -> Environment | None:
    """The distributed environment torchrun (WORLD_SIZE, RANK, LOCAL_RANK) or a Slurm job step of several
    tasks (through submitit) set for this process; None for a plain single process."""
    env = os.environ
    if "WORLD_SIZE" not in env and slurm_tasks(env) > 1:
        try:
            from submitit.helpers import TorchDistributedEnvironment
        except ImportError:
            raise ConfigError(
                f"this Slurm job step runs {env['SLURM_STEP_NUM_TASKS']} tasks, which metarun runs as the ranks of one "
                "run through submitit's helpers, but submitit is not installed. `pip install hydra-submitit-launcher` "
                "(or run one task per job step)."
            ) from None
        TorchDistributedEnvironment().export()  # MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, ...
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    local_size = int(env.get("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", str(size))))
    return Environment(rank(env), size, int(env.get("LOCAL_RANK", "0")), local_size)


def coordinate(timeout_s: float) -> None:
    """The default process group (gloo, for flags, objects and CPU tensors), once per process."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shared_now() -> str:
    """Rank 0's clock as `%Y-%m-%d/%H-%M-%S`, the same string on every rank: the default run folder's name."""
    box = [datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class World:
    """The ranks of this run and the group its tensors travel on; `World()` is one process alone."""

    def __init__(self, rank: int = 0, size: int = 1, backend: str | None = None, group: Any = None,
                 timeout_s: float = 0.0) -> None:
        self.rank, self.size, self.backend, self.group, self.timeout_s = rank, size, backend, group, timeout_s

    @property
    def main(self) -> bool:
        return self.rank == 0

    def bounds(self, tasks: int) -> list[int]:
        """Where each rank's contiguous share of `tasks` starts (and the last one ends): shares differ by at
        most one task, and the task order is kept."""
        return [tasks * r // self.size for r in range(self.size + 1)]

    def share(self, tasks: int) -> slice:
        b = self.bounds(tasks)
        return slice(b[self.rank], b[self.rank + 1])

    def sum(self, t: Tensor) -> Tensor:
        """The sum of `t` over the ranks (t itself alone)."""
        return self._reduce(t, dist.ReduceOp.SUM)

    def max(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.MAX)

    def any(self, flag: bool) -> bool:
        """Whether any rank says so (a stop request): every rank gets the same answer."""
        if self.size == 1:
            return flag
        t = torch.tensor([int(flag)])
        self._call(dist.all_reduce, t, op=dist.ReduceOp.MAX)  # the default (gloo) group: a CPU tensor
        return bool(t.item())

    def gather(self, local: Tensor, tasks: int) -> Tensor:
        """Every rank's share of a per-task tensor ([share, ...]) joined in task order ([tasks, ...]), on
        every rank. Shares are padded to the largest, as all_gather needs equal shapes."""
        if self.size == 1:
            return local
        b = self.bounds(tasks)
        width = max(b[r + 1] - b[r] for r in range(self.size))
        padded = local.new_zeros((width, *local.shape[1:]))
        padded[: local.shape[0]] = local
        out = [torch.empty_like(padded) for _ in range(self.size)]
        self._call(dist.all_gather, out, padded, group=self.group)
        return torch.cat([o[: b[r + 1] - b[r]] for r, o in enumerate(out)])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        self._call(dist.broadcast_object_list, box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank is here (rank 0's files are then complete for the others to read)."""
        if self.size > 1:
            self._call(dist.barrier)

    def _reduce(self, t: Tensor, op: Any) -> Tensor:
        if self.size == 1:
            return t
        t = t.clone()
        self._call(dist.all_reduce, t, op=op, group=self.group)
        return t

    def _call(self, collective: Any, *args: Any, **kwargs: Any) -> None:
        try:
            collective(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as e:
            raise RankFailed(
                f"rank {self.rank} of {self.size}: a collective ({collective.__name__}) failed: another rank died or "
                f"did not answer within `exec.timeout={self.timeout_s:g}` seconds ({str(e).splitlines()[0][:200]}). "
                "The job stops on every rank; torchrun's log names the rank that failed first. Start the same command "
                "again once the cause is fixed: it continues from the last checkpoint."
            ) from None


def backend_for(setting: str, device: torch.device) -> str:
    """`exec.backend`, with `auto` resolved: NCCL for CUDA tensors, gloo for CPU ones."""
    if setting not in BACKENDS:
        raise ConfigError(f"`exec.backend={setting}` is unknown. Valid values: {', '.join(BACKENDS)}.")
    backend = ("nccl" if device.type == "cuda" else "gloo") if setting == "auto" else setting
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"`exec.backend=nccl` carries CUDA tensors only, but this run's ranks are on {device}. Use "
            "`exec.backend=gloo` (or `auto`) for CPU ranks, or `device=cuda` on a machine with a GPU per rank."
        )
    return backend


def rank_device(name: str, env: Environment) -> str:
    """The device setting a rank runs with: its own GPU, `cuda:LOCAL_RANK`, where the run asks for CUDA."""
    wants_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return name
    count = torch.cuda.device_count()
    if env.local_size > count:
        raise ConfigError(
            f"this node runs {env.local_size} ranks with `device={name}`, but it has {count} CUDA GPU(s): each rank "
            f"needs its own. Start at most {count} per node (`torchrun --nproc_per_node={count}`), or `device=cpu`."
        )
    return f"cuda:{env.local_rank}"


def join(env: Environment, device: torch.device, backend_setting: str, timeout_s: float) -> World:
    """This rank's World: the default group joined (if the entry point has not already), the run's own group
    made with the backend that fits the device, and the CPU threads shared among the node's ranks."""
    backend = backend_for(backend_setting, device)
    coordinate(timeout_s)
    group = dist.new_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // env.local_size))
    return World(env.rank, env.size, backend, group, timeout_s)


SOLO = World()
