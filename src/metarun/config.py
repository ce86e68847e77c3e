"""The config schema, registered in Hydra's ConfigStore, and the value checks it cannot express.

The dataclasses make a misspelt key or a wrong type fail when Hydra composes the config;
`check` catches values that are well-typed but meaningless (zero shots, a negative step
count) before anything is written. This module must not import torch: `metarun --help`,
`--cfg job` and tab completion load it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import II, MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


@dataclass
class TrainConfig:
    iterations: int = 1000
    meta_batch: int = 25
    eval_every: int = 250  # 0 = only the final evaluation
    log_every: int = 1
    # Support and query examples (per class) of training tasks; the top-level `shots` and
    # `queries` are the test setting. Reptile trains with more shots than it tests.
    shots: int = II("shots")
    queries: int = II("queries")
    # Also checkpoint every N iterations (besides each validation, the end, and SIGTERM/SIGUSR1);
    # 0 = only those. A run started again in its folder continues from the checkpoint.
    checkpoint_every: int = 100


@dataclass
class InnerConfig:
    steps: int = 5
    lr: float = 0.01
    # Training only (maml, fomaml, reptile): split each task's support set into k sub-batches, step i
    # on sub-batch i mod k (Eshratifar et al. 2018, Algorithm 1). 1 = every step on the whole set.
    sub_batches: int = 1


@dataclass
class EvalConfig:
    tasks: int = 1000  # held-out tasks of the final meta-test
    steps: int = 5  # test-time adaptation steps
    lr: float = 0.01
    seed: int = 1234  # the fixed evaluation stream, shared by every run so methods see the same tasks
    val_tasks: int = 100  # tasks of the periodic validation during training (another fixed stream)
    chunk: int = 100  # tasks adapted together at evaluation time
    # BatchNorm at test time: true = statistics of the query batch (MAML's and Reptile's
    # default); false = each query example normalised with the support set's statistics only.
    transductive: bool = True
    # Which parameters the final test takes: the last iteration's, or those of the best validation mean.
    select: str = "last"


@dataclass
class OuterConfig:
    optimizer: Any = MISSING  # a torch.optim class with `_partial_: true`
    lr: float = 0.001
    anneal: bool = False  # decay lr linearly to 0 over training (Reptile's meta step size)
    decay: float = 1.0  # multiply lr by this every `decay_every` iterations (CAVIA's code: 0.9 every 5000)
    decay_every: int = 0  # 0 = no step decay
    # Clip the combined meta-gradient elementwise to +-this (MAML's miniImageNet code and CAVIA's: 10); 0 = off.
    clip_value: float = 0.0
    # Cosine annealing of lr over training down to lr_min (MAML++'s CA), on top of anneal/decay.
    cosine: bool = False
    lr_min: float = 0.0


@dataclass
class ExecConfig:
    mode: str = "auto"  # auto | loop | vmap: how the tasks of a meta-batch run; same gradients either way
    # vmap: tasks per vectorised call, 0 = all, auto = on a GPU the most that fit its memory (else all).
    # A whole number or `auto`, which the schema cannot say in one type: `check` tells the rest apart.
    chunk: Any = "auto"
    workers: int = 0  # retired (the worker pool is now torch.distributed ranks): any other value is refused
    # torch.distributed (a run under torchrun or a Slurm step of several tasks): the ranks' backend, auto = NCCL
    # for CUDA ranks and gloo for CPU ones, and how long a collective waits for the other ranks before failing.
    backend: str = "auto"
    timeout: float = 300.0
    tf32: bool = False  # CUDA (Ampere or later): TF32 matrix products and convolutions
    autocast: str = "none"  # none | bf16: the tasks' forward and backward passes under bfloat16 autocast


@dataclass
class MetarunConfig:
    data: Any = MISSING
    model: Any = MISSING
    algo: Any = MISSING
    weighting: Any = MISSING
    ways: int = 1
    shots: int = 10
    queries: int = 10
    seed: int = 0
    device: str = "auto"
    logger: str = "csv"  # csv (metrics.csv) | tensorboard (metrics.csv and TensorBoard)
    train: TrainConfig = field(default_factory=TrainConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    outer: OuterConfig = field(default_factory=OuterConfig)
    exec: ExecConfig = field(default_factory=ExecConfig)
    # Set by a `paper/` preset (`+paper=NAME`): its source, assumed settings, and the table's
    # cells with their published numbers (read by scripts/reproduce.py, ignored by a run).
    paper: Any = None


# Group schemas. Each YAML option pulls its schema through its defaults list, so the keys
# an option may carry are declared here once.


@dataclass
class SineData:
    _target_: str = "metarun.data.sine.SineWaves"
    name: str = "sine"
    amplitude: list[float] = field(default_factory=lambda: [0.1, 5.0])
    phase: list[float] = field(default_factory=lambda: [0.0, 6.283185307179586])
    x_range: list[float] = field(default_factory=lambda: [-5.0, 5.0])


DATA_ROOT = "${oc.env:METARUN_DATA,'~/.cache/metarun/data'}"
CACHE_DIR = "${oc.env:METARUN_CACHE,'~/.cache/metarun/preprocessed'}"


@dataclass
class OmniglotData:
    _target_: str = "metarun.data.omniglot.Omniglot"
    name: str = "omniglot"
    root: str = DATA_ROOT + "/omniglot"  # images_background(.zip) and images_evaluation(.zip)
    cache_dir: str = CACHE_DIR
    image_size: int = 28
    channels: int = 1
    rotate_test: bool = True  # meta-test (and validation) characters also rotated into 4 classes
    split: str = "vinyals"  # vinyals (1,200 + 423 characters) | lake (964 background + 659 evaluation)
    train_split: str = "trainval"  # trainval (every meta-train character) | train (validation held out)
    split_dir: str | None = None  # a folder with trainval/train/val/test.txt; empty = the packaged split


@dataclass
class MiniImageNetData:
    _target_: str = "metarun.data.miniimagenet.MiniImageNet"
    name: str = "miniimagenet"
    root: str = DATA_ROOT + "/miniimagenet"  # images/<filename>.jpg or mini-imagenet-cache-<split>.pkl
    cache_dir: str = CACHE_DIR
    image_size: int = 84
    channels: int = 3
    split_dir: str | None = None  # a folder with train/val/test.csv; empty = the packaged Ravi & Larochelle split


@dataclass
class FolderData:
    _target_: str = "metarun.data.folder.ImageFolder"
    name: str = "folder"  # what results.json and tables call the dataset
    root: str | None = None  # PATH/{train,val,test}/<class>/*.png|jpg, or PATH/<class>/ with split_csv
    split_csv: str | None = None  # columns class,split (relative: under root); empty = split folders
    cache_dir: str = CACHE_DIR
    image_size: int = 84
    channels: int = 3  # 3 = RGB, 1 = grayscale


@dataclass
class Conv4Model:
    _target_: str = "metarun.models.Conv4"
    in_channels: int = II("data.channels")
    image_size: int = II("data.image_size")
    out_features: int = II("ways")
    filters: int = 64
    downsample: str = "stride"  # one of DOWNSAMPLES
    features: str = "mean"  # mean (average the final map) | flatten
    context: int = 0  # CAVIA's context size (algo=cavia sets it); FiLM after the third block


@dataclass
class MLPModel:
    _target_: str = "metarun.models.MLP"
    in_features: int = 1
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    out_features: int = 1
    context: int = 0  # input width added for CAVIA's context vector (algo=cavia sets it)
    activation: str = "relu"  # relu (MAML's sine regressor) | tanh (Reptile's sine demo)


SUB_BATCHES = II("inner.sub_batches")  # passed to the algorithms whose training inner loop can split its support set


@dataclass
class MAMLAlgo:
    _target_: str = "metarun.algorithms.maml.MAML"
    name: str = "maml"
    sub_batches: int = SUB_BATCHES
    # MAML++'s options (Antoniou et al. 2019), each off by default; algo=maml_pp turns them all on.
    msl_epochs: int = 0  # MSL: anneal the multi-step loss's importance to the last step over this many epochs
    lslr: bool = False  # LSLR: learned inner learning rates per parameter tensor and step
    bnwb: bool = False  # BNWB: BatchNorm weights and biases per inner step
    first_order_epochs: int = 0  # DA: first-order meta-gradients in the first this many epochs
    epoch_iterations: int = 500  # iterations per epoch, the unit of msl_epochs and first_order_epochs


@dataclass
class MAMLPPAlgo(MAMLAlgo):
    name: str = "maml_pp"
    msl_epochs: int = 10
    lslr: bool = True
    bnwb: bool = True
    first_order_epochs: int = 50


@dataclass
class MetaSGDAlgo:
    _target_: str = "metarun.algorithms.meta_sgd.MetaSGD"
    name: str = "meta_sgd"
    sub_batches: int = SUB_BATCHES


@dataclass
class FOMAMLAlgo:
    _target_: str = "metarun.algorithms.fomaml.FOMAML"
    name: str = "fomaml"
    sub_batches: int = SUB_BATCHES


@dataclass
class ReptileAlgo:
    _target_: str = "metarun.algorithms.reptile.Reptile"
    name: str = "reptile"
    inner_optimizer: str = "sgd"  # sgd | adam (the paper's Adam has beta1 = 0)
    adam_betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    # fresh: zero Adam moments for every task; carry: the official code's Adam state, kept from task to
    # task in training and used (then restored) for every test task. carry needs inner_optimizer=adam.
    inner_state: str = "fresh"
    sub_batches: int = SUB_BATCHES


@dataclass
class IMAMLAlgo:
    _target_: str = "metarun.algorithms.imaml.IMAML"
    name: str = "imaml"
    lam: float = 1.0  # proximal strength lambda
    cg_steps: int = 5
    cg_damping: float = 0.0
    inner_optimizer: str = "sgd"  # sgd | adam
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ConvexMAMLAlgo:
    _target_: str = "metarun.algorithms.convex_maml.ConvexMAML"
    name: str = "convex_maml"


@dataclass
class ANILAlgo:
    _target_: str = "metarun.algorithms.anil.ANIL"
    name: str = "anil"


@dataclass
class ConvexIMAMLAlgo:
    _target_: str = "metarun.algorithms.convex_imaml.ConvexIMAML"
    name: str = "convex_imaml"
    lam: float = 1.0  # proximal strength lambda; inner.steps / eval.steps count Newton iterations


@dataclass
class CAVIAAlgo:
    _target_: str = "metarun.algorithms.cavia.CAVIA"
    name: str = "cavia"
    context_size: int = 4


def register() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="metarun_schema", node=MetarunConfig)
    cs.store(group="schemas/data", name="sine", node=SineData)
    cs.store(group="schemas/data", name="omniglot", node=OmniglotData)
    cs.store(group="schemas/data", name="miniimagenet", node=MiniImageNetData)
    cs.store(group="schemas/data", name="folder", node=FolderData)
    cs.store(group="schemas/model", name="mlp", node=MLPModel)
    cs.store(group="schemas/model", name="conv4", node=Conv4Model)
    cs.store(group="schemas/algo", name="maml", node=MAMLAlgo)
    cs.store(group="schemas/algo", name="fomaml", node=FOMAMLAlgo)
    cs.store(group="schemas/algo", name="reptile", node=ReptileAlgo)
    cs.store(group="schemas/algo", name="imaml", node=IMAMLAlgo)
    cs.store(group="schemas/algo", name="convex_maml", node=ConvexMAMLAlgo)
    cs.store(group="schemas/algo", name="convex_imaml", node=ConvexIMAMLAlgo)
    cs.store(group="schemas/algo", name="cavia", node=CAVIAAlgo)
    cs.store(group="schemas/algo", name="maml_pp", node=MAMLPPAlgo)
    cs.store(group="schemas/algo", name="meta_sgd", node=MetaSGDAlgo)
    cs.store(group="schemas/algo", name="anil", node=ANILAlgo)


def config_dir() -> str:
    """conf/ shipped in the wheel, else the source tree's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "conf")


def options(group: str) -> tuple[str, ...]:
    """The options of a config group: its YAML files, so that adding one is all it takes to offer it."""
    return tuple(sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml")))


ALGORITHMS = options("algo")
WEIGHTINGS = options("weighting")
EXEC_MODES = ("auto", "loop", "vmap")
AUTOCAST = ("none", "bf16")
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
INNER_OPTIMIZERS = ("sgd", "adam")
INNER_STATES = ("fresh", "carry")
# Conv4's downsampling: stride-2 convolutions, 2x2 max-pooling after the ReLU, or a ceil-mode max-pool between
# the convolution and its BatchNorm (openai/supervised-reptile's miniImageNet block).
DOWNSAMPLES = ("stride", "maxpool", "pool_norm")
ACTIVATIONS = ("relu", "tanh")


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
    if cfg.logger not in ("csv", "tensorboard"):
        raise ConfigError(f"`logger={cfg.logger}` is unknown. Valid values: csv, tensorboard.")
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


def _check_sub_batches(cfg: DictConfig) -> None:
    k = cfg.inner.sub_batches
    if k == 1:
        return
    if "sub_batches" not in cfg.algo:
        raise ConfigError(
            f"`inner.sub_batches={k}` splits the support set among the training inner steps of maml, maml_pp, "
            f"meta_sgd, fomaml and reptile (gradient agreement's Algorithm 1); algo={cfg.algo.name} does not use "
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


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two resolved configs (nested dicts) differ, sorted; a key one lacks differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(d for k in a.keys() | b.keys() for d in differences(a.get(k), b.get(k), f"{prefix}{k}."))
    return [] if a == b else [prefix.rstrip(".")]


# A preset's `paper` block describes its source table (published numbers, what its ± is, notes, assumptions): it
# changes nothing a run computes, so a run made before that text was edited is still the same run.
DESCRIPTIVE = "paper"


def run_differences(saved: Any, config: Any) -> list[str]:
    """`differences` between what two configs compute: the preset's description left out."""
    return [k for k in differences(saved, config) if k != DESCRIPTIVE and not k.startswith(f"{DESCRIPTIVE}.")]


# How the tasks are executed, not what is computed (the modes give the same gradients, tests/test_execution.py):
# a stopped run may continue with other values, e.g. a smaller `exec.chunk` after running out of GPU memory.
EXECUTION_ONLY = {"exec.mode", "exec.chunk", "exec.workers", "exec.backend", "exec.timeout"}
# Settings added since runs were first recorded, with the value that older runs had in effect.
ADDED = {"exec.tf32": False, "exec.autocast": "none", "inner.sub_batches": 1, "outer.decay": 1.0,
         "outer.decay_every": 0, "outer.clip_value": 0.0, "model.activation": "relu", "algo.inner_state": "fresh",
         "outer.cosine": False, "outer.lr_min": 0.0, "algo.msl_epochs": 0, "algo.lslr": False, "algo.bnwb": False,
         "algo.first_order_epochs": 0, "algo.epoch_iterations": 500, "exec.backend": "auto", "exec.timeout": 300.0,
         "eval.select": "last"}
# Weightings became objects (`weighting._target_`, given by weighting.name); uniform weighting has no
# `weighting.vectors` since, which older runs carried without using it.
WEIGHTING_OBJECTS = {"weighting._target_"}


def _dropped(saved: dict, config: dict) -> set[str]:
    """Keys older runs carried that say nothing about what they computed."""
    keys = {k for k in WEIGHTING_OBJECTS if lookup(saved, k) is None}
    if lookup(saved, "weighting.name") == "uniform" and lookup(config, "weighting.vectors") is None:
        keys.add("weighting.vectors")
    return keys


def _check_select(cfg: DictConfig) -> None:
    select = OmegaConf.select(cfg, "eval.select", default="last")
    if select not in ("last", "best"):
        raise ConfigError(f"`eval.select={select}` is unknown. Use `eval.select=last` (test the last iteration's "
                          "parameters) or `eval.select=best` (those of the best validation mean).")
    if select == "best" and not cfg.eval.val_tasks:
        raise ConfigError("`eval.select=best` tests the parameters of the best validation, but `eval.val_tasks=0` "
                          "turns validation off. Set `eval.val_tasks=100` (validated every `train.eval_every` "
                          "iterations), or use `eval.select=last`.")


def continuing_differences(saved: dict, config: dict) -> list[str]:
    """The keys in which `config` differs from a stopped run's `saved` one in a way that forbids continuing it:
    execution-only settings may change, and a setting the old run predates counts as at its old value."""
    added = {k for k, old in ADDED.items() if lookup(saved, k) is None and lookup(config, k) == old}
    return sorted(set(run_differences(saved, config)) - EXECUTION_ONLY - added - _dropped(saved, config))


def lookup(config: dict, key: str) -> Any:
    """The value at a dotted key of a nested dict, or None."""
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def describe_differences(before: dict, now: dict, keys: list[str], limit: int = 5) -> str:
    """`train.iterations: 3 there, 4 now; ...` for the first `limit` keys."""
    shown = "; ".join(f"{k}: {_shown(lookup(before, k))} there, {_shown(lookup(now, k))} now" for k in keys[:limit])
    return shown + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict) and "_target_" in value:
        return str(value["_target_"])
    return str(value).replace(" ", "")
