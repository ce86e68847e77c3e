"""The run: set up, meta-train (sample -> TaskGrads -> weights -> step -> log -> validate),
meta-test on the fixed evaluation stream, write the results."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from metarun import __version__, checkpoint, precision
from metarun.algorithms import Algorithm, TaskGrads, task_grads
from metarun.chunking import Chunking
from metarun.config import ConfigError
from metarun.evaluate import evaluate
from metarun.functional import Objective, Params, detached, weighted_sum
from metarun.loggers import tensorboard_log
from metarun.results import METRICS, MetricsLog, ci95, write_results, write_scores
from metarun.signals import Interrupted, stop_requests
from metarun.tasks import Episode, fixed_stream
from metarun.weighting import weights
from metarun.workers import TaskPool

COLUMNS = (
    "iteration", "loss_before", "loss_after", "val_mean", "val_ci95",
    "w_min", "w_max", "w_negative", "lr", "seconds", "inner_residual",
)


class Diverged(RuntimeError):
    """The meta-gradient stopped being finite; the message says where and what to change."""

    def __init__(self, iteration: int, losses: torch.Tensor | None, w: torch.Tensor, out_dir: Path) -> None:
        # Reptile computes no query loss on iterations that do not log.
        worst = f"{losses.abs().max().item():.3g}" if losses is not None else "not computed"
        super().__init__(
            f"training diverged at iteration {iteration}: the combined meta-gradient is not finite "
            f"(largest post-adaptation query loss in the batch: {worst}; largest task weight: "
            f"{w.abs().max().item():.3g}). Usually an inner loop blew up on one task: lower `inner.lr` "
            f"or `outer.lr`, and run in a new folder. No results were written; {out_dir} keeps metrics.csv of the "
            f"iterations before it and {_last_good(out_dir)}."
        )


def _last_good(out_dir: Path) -> str:
    saved = checkpoint.saved_iteration(out_dir)
    if saved is None:
        return "no checkpoint: none was saved before it (`train.checkpoint_every` sets how often one is)"
    return f"{out_dir / checkpoint.FILENAME} from iteration {saved}, the last finite state saved"


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


def agreement_vectors(cfg: DictConfig, algo: Algorithm) -> str:
    """Which TaskGrads field the weighting compares: `updates` or `meta_grads`."""
    vectors = cfg.weighting.vectors
    if vectors == "auto":
        return "updates" if algo.moves_parameters else "meta_grads"
    if vectors == "updates" and cfg.weighting.name == "agreement" and not algo.moves_parameters:
        raise ConfigError(
            f"`weighting.vectors=updates` is degenerate for algo={algo.name}: its inner loop does not move the "
            "network's parameters, so every update theta - phi_i is zero and agreement cannot tell tasks apart. "
            "Use `weighting.vectors=meta_grads` (or `auto`)."
        )
    return vectors


@contextmanager
def task_executor(
    cfg: DictConfig, config: dict, mode: str, algo: Algorithm, objective: Objective, chunking: Chunking
) -> Iterator[Callable[[Params, Episode, bool], TaskGrads]]:
    """The function that computes a meta-batch's TaskGrads in `mode`: here (in `chunking`'s vmap chunks, under
    `exec.autocast`), or in `exec.workers` processes."""
    if not cfg.exec.workers:
        def run_tasks(theta: Params, episode: Episode, diagnose: bool) -> TaskGrads:
            with precision.autocast(cfg.exec.autocast, chunking.device):
                return chunking.run(lambda chunk: task_grads(algo, theta, objective, episode, mode, chunk, diagnose),
                                    len(episode))

        yield run_tasks
        return
    with TaskPool({**config, "exec": {**config["exec"], "mode": mode, "chunk": chunking.size}},
                  cfg.exec.workers) as pool:
        yield pool


def all_finite(tree: Params) -> torch.Tensor:
    """Whether every entry of every tensor is finite, as one scalar on their device (reading it is one sync)."""
    return torch.stack([torch.isfinite(v).all() for v in tree.values()]).all()


def combine(weighting: str, grads: TaskGrads, vectors: str) -> tuple[torch.Tensor, Params, torch.Tensor]:
    """The task weights, their weighted sum of the meta-gradients, and whether that sum is finite.

    All three stay on the gradients' device and nothing is read from it: agreement weights that are 0/0
    come out NaN (see weighting.agreement) and show as a sum that is not finite.
    """
    w = weights(weighting, getattr(grads, vectors), check=False)
    combined = weighted_sum(w, grads.meta_grads)
    return w, combined, all_finite(combined)


def outer_step(optimizer: torch.optim.Optimizer, params: Params, combined: Params) -> float:
    """Write the combined meta-gradient into the parameters' `.grad` and step; returns the learning rate used."""
    for name, g in combined.items():
        params[name].grad = g
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    return lr


def logged(metrics: dict[str, torch.Tensor], w: torch.Tensor) -> dict[str, float]:
    """An iteration's logged numbers: the batch means of the metrics and the weights' range, read in one copy."""
    values = [*(m.mean() for m in metrics.values()), w.min(), w.max(), (w < 0).sum()]
    read = torch.stack([v.to(torch.float64) for v in values]).tolist()
    return {**dict(zip(metrics, read, strict=False)), "w_min": read[-3], "w_max": read[-2], "w_negative": int(read[-1])}


def restore(saved: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            schedule: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator) -> None:
    """Continue from a checkpoint read onto the CPU: parameters and optimiser state go to the model's device."""
    model.load_state_dict(saved["params"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    generator.set_state(saved["task_rng"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") and torch.cuda.is_available():
        # One state per GPU of the machine that wrote it; this one may have fewer.
        for index, state in enumerate(saved["cuda_rng"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)


def execution_mode(name: str, device: torch.device, model: torch.nn.Module) -> str:
    """`exec.mode`, with `auto` resolved to what the benchmark found faster on this device and model.

    On a GPU, vmap. On a CPU, vmap for networks of small matrix products (the sine MLP: 3-6x
    faster than the loop), but the loop for convolutional networks: batching 32 tasks' images
    there was slower and took 4-9x the memory (README: Benchmark).
    """
    if name != "auto":
        return name
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return "vmap" if device.type == "cuda" or not convolutional else "loop"


def check_execution(cfg: DictConfig, device: torch.device) -> None:
    if cfg.exec.workers and device.type != "cpu":
        raise ConfigError(f"`exec.workers={cfg.exec.workers}` shares tasks among CPU processes, but this run is on "
                          f"{device}. Use `exec.workers=0` there (`exec.mode=vmap` batches the tasks on a GPU).")


class Parts(NamedTuple):
    """What a run is built from: the same for training, the tests and the benchmark."""

    device: torch.device
    source: Any
    model: torch.nn.Module
    algo: Algorithm
    objective: Objective


def build(cfg: DictConfig) -> Parts:
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # model initialisation
    source = instantiate(cfg.data)
    # Loads (or generates) the data on the device, after checking the episodes can be drawn.
    source.setup(device, cfg.ways, (cfg.train.shots, cfg.train.queries), (cfg.shots, cfg.queries),
                 validate=cfg.eval.val_tasks > 0)
    model = instantiate(cfg.model).to(device)
    algo = instantiate(cfg.algo, steps=cfg.inner.steps, lr=cfg.inner.lr)
    return Parts(device, source, model, algo, Objective(model, source.loss, cfg.eval.transductive))


def bn_mode(objective: Objective) -> str:
    if not objective.has_batchnorm:
        return "none"
    return "transductive" if objective.transductive else "support-statistics"


def model_settings(cfg: DictConfig) -> str:
    """The model's own settings, e.g. `filters=64 downsample=stride features=mean` (no interpolated sizes)."""
    inherited = {"_target_", "in_channels", "image_size", "out_features", "in_features"}
    return " ".join(f"{k}={v}" for k, v in cfg.model.items() if k not in inherited)


def run(cfg: DictConfig, out_dir: Path, accepted: Callable[[], None] | None = None) -> tuple[dict, float]:
    """Train and test as `cfg` says; returns the results record and the final validation metric.

    A folder with a checkpoint from the same config continues from it (whether the folder may be used at
    all, and whether it holds finished results, the caller decides: metarun.rundir). `accepted` is called
    once every check has passed, before anything is written.
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    saved = checkpoint.resumable(out_dir, config)
    device, source, model, algo, objective = build(cfg)
    check_execution(cfg, device)
    mode = execution_mode(cfg.exec.mode, device, model)
    # A carried inner-optimiser state makes the tasks of a meta-batch a sequence: they train one by one.
    train_mode = "loop" if algo.sequential else mode
    vectors = agreement_vectors(cfg, algo)
    params = dict(model.named_parameters())
    optimizer = instantiate(cfg.outer.optimizer)(params.values(), lr=cfg.outer.lr)
    iterations = cfg.train.iterations
    # Reptile anneals its meta step size linearly to 0, CAVIA's code decays it stepwise; LambdaLR scales the lr.
    decay, decay_every = cfg.outer.decay, cfg.outer.decay_every

    def lr_factor(it: int) -> float:
        return (1 - it / iterations if cfg.outer.anneal else 1.0) * decay ** (it // decay_every if decay_every else 0)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    # The task stream has its own generator so that model init and sampling are independent.
    generator = torch.Generator().manual_seed(cfg.seed)
    first, elapsed, last_val = 1, 0.0, None
    if saved is not None:
        restore(saved, model, optimizer, schedule, generator)
        algo.load_state_dict(saved.get("algo") or {})
        first, elapsed, last_val = saved["iteration"] + 1, saved["seconds"], saved["val_mean"]
    tf32 = precision.use_tf32(cfg.exec.tf32, device)
    # Tasks per vmap call, for the training step and for evaluation (which keeps no outer graph: more fit).
    train_chunks = Chunking(cfg.exec.chunk, device, train_mode, "training step")
    eval_chunks = Chunking("auto", device, mode, "evaluation")

    def test(split: str, n_tasks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        stream = fixed_stream(source, split, n_tasks, cfg.eval.chunk, cfg.ways, cfg.shots, cfg.queries, seed)
        with precision.autocast(cfg.exec.autocast, device):
            return evaluate(algo, detached(model), objective, source.score, stream,
                            cfg.eval.steps, cfg.eval.lr, device, mode, eval_chunks)

    def validate() -> tuple[float, float]:
        # Validation tasks come from the validation split's own fixed stream, never the test stream.
        return ci95(test("val", cfg.eval.val_tasks, cfg.eval.seed + 1)[0].tolist())

    def state(iteration: int) -> dict:
        # Everything needed to continue the run exactly, config included.
        return {"params": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "algo": algo.state_dict(), "iteration": iteration,
                "task_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "seconds": elapsed + time.perf_counter() - start, "val_mean": last_val, "config": config}

    if accepted is not None:
        accepted()
    log = MetricsLog(out_dir / METRICS, COLUMNS, resume_after=first - 1 if saved else None)
    board = tensorboard_log(cfg, out_dir)
    start = time.perf_counter()
    bar = tqdm(range(first, iterations + 1), desc=f"{algo.name}+{cfg.weighting.name}", disable=None)
    with stop_requests() as stop, task_executor(cfg, config, train_mode, algo, objective, train_chunks) as run_tasks:
        for it in bar:
            episode = source.sample("train", cfg.train.meta_batch, cfg.ways, cfg.train.shots, cfg.train.queries,
                                    generator).to(device)
            logging = it % cfg.train.log_every == 0 or it == iterations
            grads = run_tasks(detached(model), episode, logging)
            w, combined, finite = combine(cfg.weighting.name, grads, vectors)
            # The iteration's one read of the device (a GPU sync). Stop before the step: the parameters and
            # the last checkpoint stay finite.
            if not finite:
                weights(cfg.weighting.name, getattr(grads, vectors))  # says so if agreement weights were 0/0
                raise Diverged(it, grads.metrics.get("loss_after"), w, out_dir)
            if cfg.outer.clip_value:  # MAML's miniImageNet code and CAVIA's clip the meta-gradient elementwise
                combined = {k: g.clamp(-cfg.outer.clip_value, cfg.outer.clip_value) for k, g in combined.items()}
            lr = outer_step(optimizer, params, combined)
            schedule.step()

            row = {"iteration": it, "lr": lr}
            if logging:
                row |= logged(grads.metrics, w)
                bar.set_postfix(loss=f"{row['loss_after']:.4f}")
            validating = (cfg.train.eval_every and it % cfg.train.eval_every == 0) or it == iterations
            if validating and cfg.eval.val_tasks:
                row["val_mean"], row["val_ci95"] = validate()
                last_val = row["val_mean"]
            if len(row) > 2:
                row["seconds"] = round(elapsed + time.perf_counter() - start, 3)
                log.write(row)
                board.write(row)
            every = cfg.train.checkpoint_every
            if validating or (every and it % every == 0) or stop:
                checkpoint.save(out_dir, state(it))
            if stop:
                log.close()
                raise Interrupted(stop[0], it)
    log.close()
    train_seconds = elapsed + time.perf_counter() - start

    after, before = (t.tolist() for t in test("test", cfg.eval.tasks, cfg.eval.seed))
    mean, half = ci95(after)
    val = mean if last_val is None else last_val  # the last iteration validates unless val_tasks=0
    write_scores(out_dir, after, before)
    record = {
        "data": source.name, "task_kind": source.kind, "ways": cfg.ways, "shots": cfg.shots,
        "queries": cfg.queries, "train_shots": cfg.train.shots, "train_queries": cfg.train.queries,
        "algo": algo.name, "weighting": cfg.weighting.name,
        "metric": source.metric, "higher_is_better": source.higher_is_better,
        "mean": mean, "ci95": half, "n_tasks": len(after), "scores_file": "scores.csv",
        "mean_before": ci95(before)[0], "ci95_before": ci95(before)[1],
        "model": cfg.model._target_.rsplit(".", 1)[-1], "model_settings": model_settings(cfg),
        "bn_mode": bn_mode(objective), **source.record(),
        "val_mean": val, "seed": cfg.seed, "iterations": iterations,
        "meta_batch": cfg.train.meta_batch, "inner_steps": cfg.inner.steps, "inner_lr": cfg.inner.lr,
        "eval_steps": cfg.eval.steps, "eval_lr": cfg.eval.lr, "eval_seed": cfg.eval.seed,
        "weighting_vectors": vectors, "exec_mode": mode, "exec_workers": cfg.exec.workers,
        "exec_chunk": None if mode == "loop" else train_chunks.tasks_per_call(cfg.train.meta_batch),
        "tf32": tf32, "autocast": cfg.exec.autocast,
        "seconds": round(elapsed + time.perf_counter() - start, 2), "train_seconds": round(train_seconds, 2),
        "resumed_from": None if saved is None else saved["iteration"],
        "device": str(device), "torch": torch.__version__, "metarun": __version__,
    }
    board.close(config, record)
    write_results(out_dir, record)
    return record, val
