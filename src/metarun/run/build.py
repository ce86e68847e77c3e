"""The one place where a config becomes a run's parts: the training loop, the benchmark, plots, and every
rank of a distributed run all build them here."""

from __future__ import annotations

from typing import NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from metarun.algorithms import Algorithm
from metarun.config.schema import ConfigError
from metarun.core import distributed
from metarun.core.distributed import SOLO, World
from metarun.core.functional import Objective, Params, detached
from metarun.core.tasks import TaskSource
from metarun.run.execution import Executor, execution_mode
from metarun.weighting import Weighting


class Parts(NamedTuple):
    """What a run is built from: the same for training, the tests and the benchmark."""

    device: torch.device
    source: TaskSource
    model: nn.Module
    algo: Algorithm
    weighting: Weighting
    executor: Executor
    objective: Objective
    # The algorithm's own meta-parameters (e.g. Meta-SGD's learning rates), stepped with the model's.
    meta: dict[str, nn.Parameter]
    world: World = SOLO  # the ranks sharing each meta-batch (torch.distributed), or this process alone

    def parameters(self) -> dict[str, nn.Parameter]:
        """Everything the outer optimiser steps: the model's parameters, then the algorithm's."""
        return {**dict(self.model.named_parameters()), **self.meta}

    def theta(self) -> Params:
        """The meta-parameters as the algorithms take them, cut from the modules' autograd graph."""
        return {**detached(self.model), **{k: v.detach() for k, v in self.meta.items()}}

    def load(self, state: dict) -> None:
        """Take the parameters a checkpoint holds (read onto any device)."""
        self.model.load_state_dict(state["params"])
        with torch.no_grad():
            for k, v in (state.get("meta_params") or {}).items():
                self.meta[k].copy_(v)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"`device={name}` was asked for, but this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
            "Use `device=cpu`, or `device=auto` to take a GPU only when there is one."
        )
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ConfigError(
            f"`device={name}` asks for CUDA GPU number {device.index}, but this machine shows {count} ({have}; "
            "CUDA_VISIBLE_DEVICES, when set, numbers the GPUs it lists from 0). Use `device=cuda` for the first "
            f"one, or `device=cuda:N` with N below {count}."
        )
    return device


def join_world(cfg: DictConfig, device_name: str) -> tuple[torch.device, World]:
    """The run's device and its World: under torchrun or a Slurm step of several tasks, each rank on its own
    GPU (or its share of the CPU cores) in the process group; otherwise `device` alone."""
    env = distributed.environment()
    if env is None:
        return resolve_device(device_name), SOLO
    device = resolve_device(distributed.rank_device(device_name, env))
    if cfg.train.meta_batch < env.size:
        raise ConfigError(
            f"`train.meta_batch={cfg.train.meta_batch}` is smaller than the {env.size} ranks of this run: each rank "
            f"computes a share of the meta-batch's tasks, so every rank needs one. Use `train.meta_batch={env.size}` "
            f"or more, or start fewer ranks (`torchrun --nproc_per_node=...`).")
    if cfg.algo.get("inner_state") == "carry":
        raise ConfigError(
            "`algo.inner_state=carry` makes each task's inner loop start from the Adam state the previous task left, "
            f"so the tasks of a meta-batch run one after another in one process; this run has {env.size} ranks that "
            "would run them side by side. Run it in one process (without torchrun), or use `algo.inner_state=fresh`.")
    return device, distributed.join(env, device, cfg.exec.backend, cfg.exec.timeout)


def build(cfg: DictConfig, data: bool = True) -> Parts:
    """The run's parts from its config. `data=False` leaves the data source unloaded (for callers that bring
    their own episodes)."""
    device, world = join_world(cfg, cfg.device)
    torch.manual_seed(cfg.seed)  # model initialisation
    source = instantiate(cfg.data)
    if data:
        # Loads (or generates) the data on the device, after checking the episodes can be drawn.
        source.setup(device, cfg.ways, (cfg.train.shots, cfg.train.queries), (cfg.shots, cfg.queries),
                     validate=cfg.eval.val_tasks > 0)
    model = instantiate(cfg.model).to(device)
    objective = Objective(model, source.loss, cfg.eval.transductive)
    algo = instantiate(cfg.algo, steps=cfg.inner.steps, lr=cfg.inner.lr)
    weighting = instantiate(cfg.weighting)
    weighting.bind(algo)
    mode = execution_mode(cfg.exec.mode, device, model)
    executor = Executor(mode, device, cfg.exec.chunk, cfg.exec.autocast, algo.sequential)
    meta = {k: nn.Parameter(v) for k, v in algo.meta_parameters(detached(model), objective).items()}
    return Parts(device, source, model, algo, weighting, executor, objective, meta, world)
