"""The config schema: one dataclass per config node and per group option, registered in Hydra's ConfigStore by
`store.register`. A misspelt key or a wrong type fails when Hydra composes the config; the values that are
well-typed but meaningless are `checks`'s. The valid values of the string settings are declared here, beside the
fields they constrain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import II, MISSING


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
    logger: str = "csv"  # csv (metrics.csv) | tensorboard | mlflow | wandb (metrics.csv and that tracker)
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




@dataclass
class UniformWeighting:
    _target_: str = "metarun.weighting.uniform.Uniform"
    name: str = "uniform"


@dataclass
class AgreementWeighting:
    _target_: str = "metarun.weighting.agreement.Agreement"
    name: str = "agreement"
    # Which per-task vectors are compared: updates (theta - phi_i over the network's parameters, the paper's
    # choice), meta_grads, or auto (updates, except meta_grads for CAVIA, whose inner loop leaves the network).
    vectors: str = "auto"


@dataclass
class LossSoftmaxWeighting:
    _target_: str = "metarun.weighting.loss_softmax.LossSoftmax"
    name: str = "loss_softmax"
    temperature: float = 1.0  # tau > 0; larger is closer to uniform weights

# The valid values of string settings.
EXEC_MODES = ("auto", "loop", "vmap")
AUTOCAST = ("none", "bf16")
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
INNER_OPTIMIZERS = ("sgd", "adam")
INNER_STATES = ("fresh", "carry")
# Conv4's downsampling: stride-2 convolutions, 2x2 max-pooling after the ReLU, or a ceil-mode max-pool between
# the convolution and its BatchNorm (openai/supervised-reptile's miniImageNet block).
DOWNSAMPLES = ("stride", "maxpool", "pool_norm")
ACTIVATIONS = ("relu", "tanh")
