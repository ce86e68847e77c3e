"""The value checks the schema cannot express: a value that composes but cannot run is refused, before anything
is written, with one paragraph naming the setting and the fix."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from metarun.config.schema import (
    ACTIVATIONS,
    AUTOCAST,
    DEVICE,
    DOWNSAMPLES,
    EXEC_MODES,
    INNER_OPTIMIZERS,
    INNER_STATES,
    ConfigError,
)
from metarun.config.store import options

# logger -> the package it needs beside metarun (its pip extra has the same name); csv needs none.
LOGGERS = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}

ALGORITHMS = options("algo")
WEIGHTINGS = options("weighting")


def _positive(cfg: DictConfig, key: str, what: str, fix: str) -> None:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    if value is None or value <= 0:
        raise ConfigError(f"`{key}={value}` is invalid: {what} must be greater than 0. {fix}")


def check(cfg: DictConfig) -> None:
    """Reject values that compose but cannot run, with one paragraph naming the fix."""
    _positive(cfg, "shots", "the number of support examples per class (per task for regression)",
              "Set e.g. `shots=1` or `shots=5` for classification, `shots=10` for sine.")
    _positive(cfg, "queries", "the number of query examples per class (per task for regression)",
              "Set e.g. `queries=15`.")
    _positive(cfg, "ways", "the number of classes per task", "Set e.g. `ways=5` (sine ignores it).")
    _positive(cfg, "train.shots", "the number of support examples of training tasks",
              "Leave it out to train with `shots`, or set e.g. `train.shots=10`.")
    _positive(cfg, "train.queries", "the number of query examples of training tasks",
              "Leave it out to train with `queries`, or set e.g. `train.queries=15`.")
    for key in ("inner.steps", "eval.steps"):
        _positive(cfg, key, "the number of adaptation steps",
                  f"Set e.g. `{key}=5`; every algorithm adapts with at least one gradient step.")
    for key in ("inner.lr", "eval.lr", "outer.lr"):
        _positive(cfg, key, "a learning rate", f"Set e.g. `{key}=0.01`.")
    for key in ("train.iterations", "train.meta_batch", "eval.tasks", "eval.chunk", "inner.sub_batches"):
        _positive(cfg, key, "a count", f"Set `{key}` to a positive whole number.")
    _non_negative(cfg, ("train.eval_every", "train.checkpoint_every", "eval.val_tasks",
                        "outer.decay_every", "outer.clip_value"))
    _positive(cfg, "exec.timeout", "a time in seconds", "Set e.g. `exec.timeout=300`.")
    if cfg.exec.workers:
        raise ConfigError(
            f"`exec.workers={cfg.exec.workers}` is retired: the tasks of a meta-batch are now shared among the ranks "
            f"of torch.distributed. Start the same command as `torchrun --nproc_per_node={cfg.exec.workers} -m metarun "
            "...` (without exec.workers), which runs that many CPU processes (or one per GPU) with the same results.")
    if not 0 < cfg.outer.decay <= 1:
        raise ConfigError(f"`outer.decay={cfg.outer.decay}` is invalid: the step decay factor must be in (0, 1]. "
                          "Set e.g. `outer.decay=0.9 outer.decay_every=5000`, or `outer.decay=1` for none.")
    _check_logger(cfg.logger)
    _check_select(cfg)
    if cfg.eval.val_tasks == 1:
        raise ConfigError(
            "`eval.val_tasks=1` is too few for a confidence interval. Set `eval.val_tasks=100`, "
            "or `eval.val_tasks=0` to skip validation during training."
        )
    _check_exec(cfg)
    _check_algo(cfg)
    _check_model(cfg)
    optimizer = cfg.algo.get("inner_optimizer")
    if optimizer is not None and optimizer not in INNER_OPTIMIZERS:
        raise ConfigError(
            f"`algo.inner_optimizer={optimizer}` is unknown. Valid values: {', '.join(INNER_OPTIMIZERS)}."
        )
    if not DEVICE.fullmatch(str(cfg.device)):
        raise ConfigError(f"`device={cfg.device}` is unknown. Valid values: auto, cpu, cuda, cuda:N (N = 0, 1, ...).")


def _check_exec(cfg: DictConfig) -> None:
    if cfg.exec.mode not in EXEC_MODES:
        raise ConfigError(f"`exec.mode={cfg.exec.mode}` is unknown. Valid values: {', '.join(EXEC_MODES)}.")
    chunk = cfg.exec.chunk
    if chunk != "auto" and not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0):
        raise ConfigError(
            f"`exec.chunk={chunk}` is invalid: it is the number of tasks per vectorised call, 0 (all of them), or "
            "`auto` (on a GPU, the most that fit its memory). Set `exec.chunk=auto`, or e.g. `exec.chunk=8`."
        )
    if cfg.exec.autocast not in AUTOCAST:
        raise ConfigError(
            f"`exec.autocast={cfg.exec.autocast}` is not offered. Valid values: {', '.join(AUTOCAST)}. Use "
            "`exec.autocast=bf16` for bfloat16 autocast (float32's range, 8 bits of mantissa), or `none` for float32. "
            "float16 would need loss scaling, which metarun does not do, and PyTorch's autocast has no fp8."
        )


def _check_algo(cfg: DictConfig) -> None:
    """The algorithm-specific values, for whichever of them the chosen algorithm has."""
    algo = cfg.algo
    if "lam" in algo:
        _positive(cfg, "algo.lam", "the proximal strength lambda", "Set e.g. `algo.lam=1.0`.")
    if "cg_steps" in algo:
        _positive(cfg, "algo.cg_steps", "the number of CG iterations", "Set e.g. `algo.cg_steps=5`.")
    if "context_size" in algo:
        _positive(cfg, "algo.context_size", "CAVIA's context size", "Set e.g. `algo.context_size=4`.")
    if "cg_damping" in algo:
        _non_negative(cfg, ("algo.cg_damping",))
    _check_sub_batches(cfg)
    _check_inner_state(cfg)


def _sub_batch_algorithms() -> str:
    """The algorithms whose schema takes `sub_batches`, as a list in words."""
    from dataclasses import fields, is_dataclass

    from metarun.config import schema

    names = [cls.name for cls in vars(schema).values() if is_dataclass(cls) and hasattr(cls, "_target_")
             and ".algorithms." in cls._target_ and "sub_batches" in {f.name for f in fields(cls)}]
    return ", ".join(sorted(names)[:-1]) + f" and {sorted(names)[-1]}"


def _check_sub_batches(cfg: DictConfig) -> None:
    k = cfg.inner.sub_batches
    if k == 1:
        return
    if "sub_batches" not in cfg.algo:
        raise ConfigError(
            f"`inner.sub_batches={k}` splits the support set among the training inner steps of "
            f"{_sub_batch_algorithms()} (gradient agreement's Algorithm 1); algo={cfg.algo.name} does not use "
            "it. Set `inner.sub_batches=1`, or choose one of those algorithms.")
    support = cfg.train.shots * (cfg.ways if "channels" in cfg.data else 1)
    if k > support:
        raise ConfigError(
            f"`inner.sub_batches={k}` is more sub-batches than a training support set has examples ({support}), "
            f"so some would be empty. Set `inner.sub_batches` to at most {support}.")


def _check_inner_state(cfg: DictConfig) -> None:
    state = cfg.algo.get("inner_state")
    if state is None:
        return
    if state not in INNER_STATES:
        raise ConfigError(f"`algo.inner_state={state}` is unknown. Valid values: {', '.join(INNER_STATES)}.")
    if state != "carry":
        return
    if cfg.algo.inner_optimizer != "adam":
        raise ConfigError(
            f"`algo.inner_state=carry` keeps the inner Adam's moment estimates from task to task, but "
            f"`algo.inner_optimizer={cfg.algo.inner_optimizer}` has none. Set `algo.inner_optimizer=adam`, or "
            "`algo.inner_state=fresh`.")
    if cfg.exec.mode == "vmap":
        raise ConfigError(
            "`algo.inner_state=carry` makes each task's inner loop start from the Adam state the previous task "
            "left, so the tasks of a meta-batch must run one after another, in one process; `exec.mode=vmap` runs "
            "them side by side. Use `exec.mode=loop` (or `auto`), or `algo.inner_state=fresh`.")


def _check_model(cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    images = "channels" in cfg.data
    if not images and cfg.ways != 1:
        raise ConfigError(
            f"`ways={cfg.ways}` does not apply to data={cfg.data.name}: a regression task has no classes, so the "
            "setting would only be recorded, never used. Leave out `ways` (it is 1 for regression), or choose a "
            "classification dataset (`data=omniglot`, `data=miniimagenet`, `data=folder`).")
    if images and "in_channels" not in cfg.model:
        raise ConfigError(
            f"the chosen model (`{cfg.model._target_}`) takes vectors, but data={cfg.data.name} has images. "
            "Choose an image model: `model=conv4` (Omniglot), `model=conv4_pool32`, `model=conv4_pool64` or "
            "`model=conv4_reptile32`."
        )
    if not images and "in_channels" in cfg.model:
        raise ConfigError(
            f"the chosen model (`{cfg.model._target_}`) takes images, but data={cfg.data.name} does not. "
            "Use `model=mlp` for sine, or an image dataset (`data=omniglot`, `data=miniimagenet`, `data=folder`)."
        )
    for key, valid in (("model.downsample", DOWNSAMPLES), ("model.features", ("mean", "flatten")),
                       ("model.activation", ACTIVATIONS)):
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in valid:
            raise ConfigError(f"`{key}={value}` is unknown. Valid values: {', '.join(valid)}.")


# What 0 means for each setting that may be 0: the fix a negative value's message suggests.
ZERO_MEANS = {
    "train.eval_every": "validate only at the end of training (`eval.val_tasks=0` turns validation off)",
    "train.checkpoint_every": "checkpoint only at validations, at the end and when stopped by a signal",
    "eval.val_tasks": "no validation during training",
    "exec.chunk": "all tasks of a meta-batch in one vectorised call",
    "algo.cg_damping": "no damping",
}


def _non_negative(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    from omegaconf import OmegaConf

    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value < 0:
            zero = f"`{key}=0` means {ZERO_MEANS[key]}" if key in ZERO_MEANS else f"Use `{key}=0` or more"
            raise ConfigError(f"`{key}={value}` is invalid: it must be 0 or more. {zero}.")


def _check_select(cfg: DictConfig) -> None:
    select = OmegaConf.select(cfg, "eval.select", default="last")
    if select not in ("last", "best"):
        raise ConfigError(f"`eval.select={select}` is unknown. Use `eval.select=last` (test the last iteration's "
                          "parameters) or `eval.select=best` (those of the best validation mean).")
    if select == "best" and not cfg.eval.val_tasks:
        raise ConfigError("`eval.select=best` tests the parameters of the best validation, but `eval.val_tasks=0` "
                          "turns validation off. Set `eval.val_tasks=100` (validated every `train.eval_every` "
                          "iterations), or use `eval.select=last`.")


def _check_logger(logger: str) -> None:
    """Before anything is written: a logger that is unknown, or whose package is not installed."""
    from importlib.util import find_spec

    if logger not in LOGGERS:
        raise ConfigError(f"`logger={logger}` is unknown. Valid values: {', '.join(LOGGERS)}.")
    package = LOGGERS[logger]
    if package is not None and find_spec(package) is None:
        raise missing_logger(logger, "it is not installed")


def missing_logger(logger: str, why: str) -> ConfigError:
    """`logger=NAME` without its package (said by the checks, or by the tracker if its import fails)."""
    package = LOGGERS[logger]
    return ConfigError(
        f"`logger={logger}` needs the {package} package, but {why}. Install it with "
        f'`pip install "metarun[{package}]"`, or use `logger=csv` (metrics.csv is written either way).')
