"""The run: set up, meta-train (sample -> meta-step -> outer step -> log -> validate),
meta-test on the fixed evaluation stream, write the results."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from metarun.algorithms import TaskGrads
from metarun.config.schema import ConfigError
from metarun.core import precision
from metarun.core.distributed import SOLO, World
from metarun.core.functional import Params, weighted_sum
from metarun.core.tasks import Episode, fixed_stream
from metarun.report.results import CI_METHOD, METRICS, MetricsLog, ci95, settings_record, write_results, write_scores
from metarun.run import checkpoint, provenance
from metarun.run.build import Parts, build
from metarun.run.evaluate import evaluate
from metarun.run.loggers import NoLog, tracker
from metarun.run.signals import Interrupted, stop_requests
from metarun.version import __version__
from metarun.weighting import Weighting

log = logging.getLogger(__name__)

COLUMNS = (
    "iteration", "loss_before", "loss_after", "val_mean", "val_ci95",
    "w_min", "w_max", "w_negative", "lr", "seconds", "inner_residual",
)


NO_LOG = NoLog()  # what the ranks other than 0 log to: nothing


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


def all_finite(tree: Params) -> torch.Tensor:
    """Whether every entry of every tensor is finite, as one scalar on their device (reading it is one sync)."""
    return torch.stack([torch.isfinite(v).all() for v in tree.values()]).all()


class Step(NamedTuple):
    """One meta-step's outcome, all of it on the gradients' device: nothing has been read from it."""

    grads: TaskGrads
    weights: torch.Tensor  # [T]
    combined: Params  # sum_i w_i meta_grads_i
    finite: torch.Tensor  # whether `combined` is finite, one scalar


def meta_step(parts: Parts, theta: Params, episode: Episode, logging: bool = False, iteration: int = 0) -> Step:
    """Per-task meta-gradients of the episode's tasks, their weights, and the weighted sum: what the loop and
    the benchmark run. Under torch.distributed (`parts.world`) this rank computes its contiguous share of the
    tasks, and `combined` is the whole meta-batch's sum, the same on every rank; `grads` and `weights` are
    this rank's share (`gathered` joins them for logging).

    Agreement weights that are 0/0 come out NaN (see weighting.agreement) and show as a sum that is not finite.
    """
    world, tasks = parts.world, len(episode)
    if world.size > 1:
        share = world.share(tasks)
        episode = Episode(*(t[share] for t in episode))
    parts.algo.progress(iteration)
    grads = parts.executor.task_grads(parts.algo, theta, parts.objective, episode, logging,
                                      parts.weighting.needs_loss)
    return Step(grads, *combine(parts.weighting, grads, world, tasks))


def combine(weighting: Weighting, grads: TaskGrads, world: World = SOLO,
            tasks: int | None = None) -> tuple[torch.Tensor, Params, torch.Tensor]:
    """The task weights, their weighted sum of the meta-gradients (over every rank: one all-reduce), and whether
    that sum is finite: all three on the gradients' device, nothing read from it (the weighting skips its checks
    that would read it)."""
    w = weighting(grads, check=False, world=world, tasks=tasks)
    # Accumulated in float64 and rounded once: a float32 sum would round differently for each split of the
    # tasks among ranks, and the products of float32 values are exact in float64, so any world size gives
    # the same float32 gradient (up to a sum landing within 1e-16 of a float32 rounding boundary).
    combined = weighted_sum(w.double(), {k: v.double() for k, v in grads.meta_grads.items()})
    if world.size > 1:
        combined = reduced(combined, world)
    combined = {k: v.to(grads.meta_grads[k].dtype) for k, v in combined.items()}
    return w, combined, all_finite(combined)


def reduced(tree: Params, world: World) -> Params:
    """The sum over the ranks of every tensor of `tree`, in one all-reduce of their concatenation."""
    flat = world.sum(torch.cat([v.reshape(-1) for v in tree.values()]))
    return dict(zip(tree, (c.view_as(v) for c, v in zip(flat.split([v.numel() for v in tree.values()]),
                                                          tree.values(), strict=True)), strict=True))


def gathered(step: Step, world: World, tasks: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The whole meta-batch's per-task metrics and weights, from every rank's share (logging iterations only)."""
    if world.size == 1:
        return step.grads.metrics, step.weights
    names = list(step.grads.metrics)
    local = torch.stack([step.grads.metrics[k].to(step.weights.dtype) for k in names] + [step.weights], dim=1)
    full = world.gather(local, tasks)
    return {k: full[:, i] for i, k in enumerate(names)}, full[:, -1]


def outer_step(optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter], combined: Params) -> float:
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


def restore(saved: dict, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
            generator: torch.Generator) -> None:
    """Continue the optimiser, its schedule and the random streams from a checkpoint read onto the CPU: the
    optimiser's state goes to its parameters' device."""
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    generator.set_state(saved["task_rng"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") and torch.cuda.is_available():
        # One state per GPU of the machine that wrote it; this one may have fewer.
        for index, state in enumerate(saved["cuda_rng"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)


def lr_schedule(cfg: DictConfig) -> Callable[[int], float]:
    """The outer learning rate's factor at each iteration: Reptile anneals its meta step size linearly to 0,
    CAVIA's code decays it stepwise, MAML++ anneals it on a cosine down to `outer.lr_min` (CA)."""
    iterations, decay, decay_every = cfg.train.iterations, cfg.outer.decay, cfg.outer.decay_every
    floor = cfg.outer.lr_min / cfg.outer.lr

    def factor(it: int) -> float:
        f = (1 - it / iterations if cfg.outer.anneal else 1.0) * decay ** (it // decay_every if decay_every else 0)
        if cfg.outer.cosine:
            f *= floor + (1 - floor) * (1 + math.cos(math.pi * it / iterations)) / 2
        return f

    return factor


def bn_mode(parts: Parts) -> str:
    if not parts.objective.has_batchnorm:
        return "none"
    return "transductive" if parts.objective.transductive else "support-statistics"


def tested_record(cfg: DictConfig, parts: Parts, after: list[float], before: list[float], tf32: bool,
                  code: provenance.Code) -> dict:
    """The results record of a test of `parts` under `cfg` (per-task scores after and before adaptation, TF32
    on or off, by `code`): a training run's and a re-evaluation's (metarun-eval)."""
    source, executor, world = parts.source, parts.executor, parts.world
    (mean, half), (mean_before, half_before) = ci95(after), ci95(before)
    return {
        **settings_record(cfg), "data": source.name, "task_kind": source.kind,
        "metric": source.metric, "higher_is_better": source.higher_is_better,
        # One test task has no interval: null, never a zero-width one.
        "mean": mean, "ci95": None if math.isnan(half) else half, "ci95_method": CI_METHOD, "n_tasks": len(after),
        "scores_file": "scores.csv", "mean_before": mean_before,
        "ci95_before": None if math.isnan(half_before) else half_before,
        "bn_mode": bn_mode(parts), **source.record(), **parts.algo.record(), **parts.weighting.record(),
        "exec_mode": executor.mode, "world_size": world.size, "backend": world.backend,
        "exec_chunk": None if executor.mode == "loop" else executor.train_chunks.tasks_per_call(cfg.train.meta_batch),
        "tf32": tf32, "autocast": cfg.exec.autocast,
        "device": str(parts.device), "torch": torch.__version__, "metarun": __version__,
        "commit": code.commit, "uncommitted_changes": code.changed,
    }


def improves(mean: float, best: dict | None, higher_is_better: bool) -> bool:
    """Whether a validation mean is strictly better than the best so far (the first always is)."""
    return best is None or (mean > best["val_mean"] if higher_is_better else mean < best["val_mean"])


def kept(parts: Parts) -> dict:
    """The parameters a test takes: the model's and the algorithm's meta-parameters."""
    return {"params": parts.model.state_dict(), "meta_params": {k: v.detach() for k, v in parts.meta.items()}}


def take_best(parts: Parts, out_dir: Path, best: dict | None) -> dict:
    """Load best.pt into the parts for the final test (every rank reads it, once rank 0 has written it)."""
    parts.world.barrier()
    path = out_dir / checkpoint.BEST
    state = checkpoint.load(out_dir, checkpoint.BEST) if path.is_file() else None
    if best is None or state is None or int(state["iteration"]) != best["iteration"]:
        found = "missing" if state is None else f"from iteration {state['iteration']}"
        raise ConfigError(
            f"{path} is {found}, but this run's best validation was at iteration "
            f"{None if best is None else best['iteration']}: the file was changed or removed outside metarun. "
            "Run again in a new folder (or delete the folder's checkpoint.pt to train this one over).")
    parts.load(state)
    return {"iteration": best["iteration"], "val_mean": best["val_mean"]}


class Training:
    """One run's state while it trains: its parts, the outer optimiser and schedule, the task stream's
    generator and what a stopped run continues from. Built from `cfg`, continuing a checkpoint of the same
    config in `out_dir` when there is one (whether the folder may be used, the caller has decided)."""

    def __init__(self, cfg: DictConfig, out_dir: Path) -> None:
        self.cfg, self.out_dir = cfg, out_dir
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.saved = checkpoint.resumable(out_dir, self.config)
        self.parts = parts = build(cfg)
        self.params, self.world = parts.parameters(), parts.world
        self.optimizer = instantiate(cfg.outer.optimizer)(self.params.values(), lr=cfg.outer.lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_schedule(cfg))
        # The task stream has its own generator so that model init and sampling are independent.
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.first, self.elapsed, self.last_val, self.best = 1, 0.0, None, None
        self.select = OmegaConf.select(cfg, "eval.select", default="last")
        if self.saved is not None:
            parts.load(self.saved)
            parts.algo.load_state_dict(self.saved.get("algo") or {})
            restore(self.saved, self.optimizer, self.schedule, self.generator)
            self.first, self.elapsed = self.saved["iteration"] + 1, self.saved["seconds"]
            self.last_val, self.best = self.saved["val_mean"], self.saved.get("best")
        self.code = provenance.running_code()
        trained = list((self.saved or {}).get("commits") or [])
        self.commits = provenance.continued(trained, self.code.commit)
        if self.world.main and (note := provenance.switch_note(trained, self.code.commit)):
            log.warning(note)
        self.tf32 = precision.use_tf32(cfg.exec.tf32, parts.device)
        self.start = time.perf_counter()

    @property
    def resumed_from(self) -> int | None:
        return None if self.saved is None else int(self.saved["iteration"])

    def seconds(self) -> float:
        """Training time so far, the sessions before a resume included."""
        return self.elapsed + time.perf_counter() - self.start

    def test(self, split: str, n_tasks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        stream = fixed_stream(self.parts.source, split, n_tasks, cfg.eval.chunk, cfg.ways, cfg.shots, cfg.queries,
                              seed)
        return evaluate(self.parts, stream, cfg.eval.steps, cfg.eval.lr)  # shared among the ranks, gathered in order

    def state(self, iteration: int) -> dict:
        """Everything needed to continue the run exactly, config included."""
        return {**kept(self.parts), "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "algo": self.parts.algo.state_dict(), "iteration": iteration,
                "task_rng": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "seconds": self.seconds(), "val_mean": self.last_val, "best": self.best, "config": self.config,
                "commits": self.commits}

    def step(self, it: int, logging: bool) -> dict:
        """One iteration: sample, meta-step, outer step; its logged row (iteration, lr, and metrics if logging)."""
        cfg, parts = self.cfg, self.parts
        episode = parts.source.sample("train", cfg.train.meta_batch, cfg.ways, cfg.train.shots, cfg.train.queries,
                                      self.generator).to(parts.device)
        step = meta_step(parts, parts.theta(), episode, logging, it)
        # The iteration's one read of the device (a GPU sync). Stop before the step: the parameters and the last
        # checkpoint stay finite.
        if not step.finite:
            parts.weighting(step.grads)  # says so if agreement weights were 0/0
            raise Diverged(it, step.grads.metrics.get("loss_after"), step.weights, self.out_dir)
        combined = step.combined
        if cfg.outer.clip_value:  # MAML's miniImageNet code and CAVIA's clip the meta-gradient elementwise
            combined = {k: g.clamp(-cfg.outer.clip_value, cfg.outer.clip_value) for k, g in combined.items()}
        row = {"iteration": it, "lr": outer_step(self.optimizer, self.params, combined)}
        self.schedule.step()
        if logging:
            row |= logged(*gathered(step, self.world, cfg.train.meta_batch))
        return row

    def validate(self, it: int) -> dict:
        """The validation mean and CI (a fixed stream of the validation split, never the test stream's tasks);
        with `eval.select=best`, best.pt keeps the parameters of the best so far."""
        cfg = self.cfg
        mean, half = ci95(self.test("val", cfg.eval.val_tasks, cfg.eval.seed + 1)[0].tolist())
        self.last_val = mean
        if self.select == "best" and improves(mean, self.best, self.parts.source.higher_is_better):
            self.best = {"iteration": it, "val_mean": mean}
            if self.world.main:  # before this iteration's checkpoint, which records it as the best
                checkpoint.save(self.out_dir, {**kept(self.parts), **self.best, "config": self.config},
                                checkpoint.BEST)
        return {"val_mean": mean, "val_ci95": half}

    def finish(self, board: NoLog) -> tuple[dict, float]:
        """The final test of the last (or best) parameters on the fixed test stream; rank 0 writes scores.csv and
        results.json (last: its presence means the run finished). The record, and the final validation metric."""
        cfg, train_seconds = self.cfg, self.seconds()
        tested = (take_best(self.parts, self.out_dir, self.best) if self.select == "best"
                  else {"iteration": cfg.train.iterations, "val_mean": self.last_val})
        after, before = (t.tolist() for t in self.test("test", cfg.eval.tasks, cfg.eval.seed))
        val = ci95(after)[0] if self.last_val is None else self.last_val  # the last iteration validates unless 0
        record = {
            **tested_record(cfg, self.parts, after, before, self.tf32, self.code), "val_mean": val,
            "trained_commits": self.commits,
            "seconds": round(self.seconds(), 2), "train_seconds": round(train_seconds, 2),
            "resumed_from": self.resumed_from,
            "tested_iteration": tested["iteration"], "tested_val_mean": tested["val_mean"],  # `select`: settings_record
        }
        if self.world.main:
            write_scores(self.out_dir, after, before)
            write_results(self.out_dir, record)
            board.close(self.config, record)  # after results.json: a tracker keeps a copy
        self.world.barrier()  # results.json is whole before any rank reads it
        return record, val


def run(cfg: DictConfig, out_dir: Path, accepted: Callable[[int | None], None] | None = None) -> tuple[dict, float]:
    """Train and test as `cfg` says; returns the results record and the final validation metric. A folder with a
    checkpoint of the same config continues from it. `accepted(resumed_from)` is called once every check has
    passed, before anything is written."""
    t = Training(cfg, out_dir)
    if accepted is not None:
        accepted(t.resumed_from)
    world, iterations, every = t.world, cfg.train.iterations, cfg.train.checkpoint_every
    world.barrier()  # every rank has read the checkpoint before rank 0 writes anything
    # Rank 0 alone writes the run's files; the other ranks' logs write nothing.
    log = MetricsLog(out_dir / METRICS, COLUMNS, resume_after=t.resumed_from) if world.main else NO_LOG
    board = tracker(cfg, out_dir, resumed=t.saved is not None) if world.main else NO_LOG
    bar = tqdm(range(t.first, iterations + 1), desc=f"{t.parts.algo.name}+{t.parts.weighting.name}",
               disable=None if world.main else True)
    with stop_requests() as stop:
        for it in bar:
            logging = it % cfg.train.log_every == 0 or it == iterations
            row = t.step(it, logging)
            if logging:
                bar.set_postfix(loss=f"{row['loss_after']:.4f}")
            validating = (cfg.train.eval_every and it % cfg.train.eval_every == 0) or it == iterations
            if validating and cfg.eval.val_tasks:
                row |= t.validate(it)
            if len(row) > 2:
                row["seconds"] = round(t.seconds(), 3)
                log.write(row)
                board.write(row)
            # A signal to any rank stops every rank after this same iteration, with one checkpoint.
            stopping = world.any(bool(stop))
            if world.main and (validating or (every and it % every == 0) or stopping):
                checkpoint.save(out_dir, t.state(it))
            if stopping:
                log.close()
                board.close(t.config, None)  # no results: a tracker keeps what it has for the resumed run
                world.barrier()  # the checkpoint is whole before any rank exits
                raise Interrupted(stop[0] if stop else signal.SIGTERM, it)
    log.close()
    return t.finish(board)
