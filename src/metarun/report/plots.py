"""`metarun-plot`: figures from run folders (learning curves, task weights, the sine-regression figure).

matplotlib is an optional extra (`pip install "metarun[plot]"`) and is imported only inside the
functions that draw. torch is imported only by `sine`, so `curves` and `weights` start fast.
Figures are drawn on matplotlib's Agg canvas directly, never through pyplot: no GUI backend,
no global figure registry to leak from when called in-process.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from metarun.report.results import METRICS, RESULTS
from metarun.run.checkpoint import FILENAME as CHECKPOINT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROG = "metarun-plot"
SMOOTH = 10  # logged rows in the training-loss moving average: light enough to keep the trend's shape
GRID_POINTS = 401
ROLES = ("untrained", "uniform", "agreement")


class PlotError(Exception):
    """A request that cannot be drawn; the message names the folder and the fix (exit code 2)."""


# ----------------------------------------------------------------------------- matplotlib


def require_matplotlib() -> None:
    """PlotError with the install command when matplotlib is missing (checked before any slow work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError(
            'metarun-plot draws with matplotlib, which is not installed here. Install the plotting extra with '
            '`pip install "metarun[plot]"` (or `pip install matplotlib`) and run the command again.'
        ) from None


def new_figure(rows: int, cols: int, size: tuple[float, float], **subplots: Any) -> tuple[Figure, Any]:
    """A figure on the Agg canvas and its axes."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    path: Path
    label: str
    metrics: pd.DataFrame
    metric: str | None  # results.json's metric (mse, accuracy); None while the run is unfinished


def check_dirs(dirs: Sequence[Path]) -> None:
    missing = [str(d) for d in dirs if not Path(d).is_dir()]
    if missing:
        raise PlotError(f"no such folder: {', '.join(missing)}. Pass the run or multirun folders that metarun "
                        "wrote (e.g. outputs/runs/DATE/TIME or outputs/multirun/DATE/TIME).")


def _natural(path: Path) -> tuple:
    # Job folders of a multirun are numbered: 2 sorts before 10.
    return tuple((not p.isdigit(), int(p) if p.isdigit() else 0, p) for p in path.parts)


def find_runs(dirs: Sequence[Path]) -> list[Path]:
    """Every run folder (one holding metrics.csv) at or under the given folders, in natural order."""
    found: list[Path] = []
    for d in map(Path, dirs):
        found += [d] if (d / METRICS).is_file() else sorted((p.parent for p in d.rglob(METRICS)), key=_natural)
    seen: set[Path] = set()
    runs = []
    for p in found:  # overlapping arguments (a sweep and one of its jobs) name a run once
        if p.resolve() not in seen:
            seen.add(p.resolve())
            runs.append(p)
    return runs


def _results(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RESULTS).read_text())
    except (OSError, ValueError):
        return None


def run_label(run_dir: Path) -> str:
    """`algo + weighting, seed N` from results.json; a run still going has only its Hydra overrides."""
    record = _results(run_dir)
    if record is not None:
        return f"{record.get('algo', '?')} + {record.get('weighting', '?')}, seed {record.get('seed', '?')}"
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        from omegaconf import OmegaConf

        try:
            items = [str(o) for o in OmegaConf.load(overrides)]
            return f"{' '.join(items) or 'defaults'} (unfinished)"
        except Exception:  # a half-written or foreign file: the folder name still identifies the run
            pass
    return f"{run_dir.name} (unfinished)"


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv as numbers. A run still going may be mid-line: a last line without its newline is
    dropped, since its final field may be cut short (pandas would read it as a smaller number)."""
    try:
        lines = (run_dir / METRICS).read_text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        frame = pd.read_csv(io.StringIO("".join(lines)), on_bad_lines="skip")
    except (pd.errors.EmptyDataError, OSError, UnicodeDecodeError):
        return pd.DataFrame()
    return frame.apply(pd.to_numeric, errors="coerce")


def load_runs(dirs: Sequence[Path]) -> list[Run]:
    check_dirs(dirs)
    paths = find_runs(dirs)
    if not paths:
        raise PlotError(f"no runs under {', '.join(map(str, dirs))}: a run folder holds {METRICS}, which metarun "
                        "writes from the first iteration. Pass run or multirun folders that metarun wrote "
                        "(e.g. outputs/multirun/DATE/TIME).")
    labels = [run_label(p) for p in paths]
    # Two runs with the same label (same method and seed in different sweeps) get their folder added.
    labels = [f"{lab} [{p.parent.name}/{p.name}]" if labels.count(lab) > 1 else lab
              for lab, p in zip(labels, paths, strict=True)]
    return [Run(p, lab, read_metrics(p), (_results(p) or {}).get("metric"))
            for p, lab in zip(paths, labels, strict=True)]


def column(frame: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The rows where every named column (and iteration) is present: metrics.csv leaves gaps."""
    wanted = ["iteration", *names]
    if any(n not in frame for n in wanted):
        return pd.DataFrame(columns=wanted)
    return frame[wanted].dropna()


# ----------------------------------------------------------------------------- curves and weights


def plot_loss(runs: Sequence[Run], out: Path) -> Path:
    fig, axes = new_figure(1, 1, (8, 5))
    ax = axes[0, 0]
    positive = True
    for i, run in enumerate(runs):
        rows = column(run.metrics, "loss_after")
        if rows.empty:
            continue
        loss = rows["loss_after"]
        positive &= bool((loss > 0).all())
        ax.plot(rows["iteration"], loss, color=f"C{i % 10}", alpha=0.2, linewidth=0.8)
        ax.plot(rows["iteration"], loss.rolling(SMOOTH, min_periods=1).mean(), color=f"C{i % 10}", label=run.label)
    if positive and ax.lines:
        ax.set_yscale("log")  # losses span orders of magnitude over training
    ax.set(xlabel="iteration", ylabel="query loss after adaptation",
           title=f"Training query loss after adaptation\n(faint: raw; solid: moving average over {SMOOTH} logged "
                 "iterations)")
    _legend(ax)
    return save(fig, out / "curves_loss.png")


def plot_validation(runs: Sequence[Run], out: Path) -> Path:
    fig, axes = new_figure(1, 1, (8, 5))
    ax = axes[0, 0]
    for i, run in enumerate(runs):
        rows = column(run.metrics, "val_mean", "val_ci95")
        if rows.empty:
            continue
        it, mean, ci = rows["iteration"], rows["val_mean"], rows["val_ci95"]
        ax.plot(it, mean, marker="o", markersize=3, color=f"C{i % 10}", label=run.label)
        ax.fill_between(it, mean - ci, mean + ci, color=f"C{i % 10}", alpha=0.2)
    metrics = {r.metric for r in runs if r.metric}
    metric = metrics.pop() if len(metrics) == 1 else "score"
    ax.set(xlabel="iteration", ylabel=f"validation {metric}", title="Validation mean ± 95% CI over validation tasks")
    if not ax.lines:
        ax.text(0.5, 0.5, "no validation rows yet (or eval.val_tasks=0)", ha="center", transform=ax.transAxes)
    _legend(ax)
    return save(fig, out / "curves_val.png")


def plot_weights(runs: Sequence[Run], out: Path) -> Path:
    panels = (("w_min", "smallest task weight"), ("w_max", "largest task weight"),
              ("w_negative", "tasks with negative weight"))
    fig, axes = new_figure(3, 1, (8, 9), sharex=True)
    for ax, (name, title) in zip(axes[:, 0], panels, strict=True):
        for i, run in enumerate(runs):
            rows = column(run.metrics, name)
            if not rows.empty:
                ax.plot(rows["iteration"], rows[name], color=f"C{i % 10}", linewidth=0.9, label=run.label)
        ax.set(ylabel=name, title=title)
    axes[0, 0].axhline(0.0, color="grey", linewidth=0.6)  # below it, some task disagreed with the batch
    axes[-1, 0].set_xlabel("iteration")
    fig.suptitle("Task weights per iteration (uniform: all 1/T; agreement: Σ|w| = 1, negative = disagreeing task)")
    _legend(axes[0, 0])
    return save(fig, out / "weights.png")


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def curves(dirs: Sequence[Path], out: Path | None) -> list[Path]:
    runs = load_runs(dirs)
    dest = Path(out or dirs[0])
    return [plot_loss(runs, dest), plot_validation(runs, dest)]


def weights(dirs: Sequence[Path], out: Path | None) -> list[Path]:
    runs = load_runs(dirs)
    return [plot_weights(runs, Path(out or dirs[0]))]


# ----------------------------------------------------------------------------- sine


def load_sine_checkpoint(run_dir: Path) -> dict:
    """The run's checkpoint, refused with the fix when it is missing, unreadable or not a sine run."""
    if not run_dir.is_dir():
        raise PlotError(f"no such folder: {run_dir}. Pass a finished (or checkpointed) sine run folder, "
                        "e.g. outputs/runs/DATE/TIME.")
    if not (run_dir / CHECKPOINT).is_file():
        raise PlotError(f"{run_dir} has no {CHECKPOINT}: a run writes it at every validation and at the end. "
                        "Pass the folder of a sine run that got that far (e.g. outputs/multirun/DATE/TIME/0).")
    from metarun.run import checkpoint

    try:
        state = checkpoint.load(run_dir)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise PlotError(f"could not read {run_dir / CHECKPOINT} ({e}). It may be from an interrupted copy; "
                        "copy the run folder again, or rerun the experiment.") from None
    data = state.get("config", {}).get("data", {}) if isinstance(state, dict) else {}
    if data.get("name") != "sine" and not str(data.get("_target_", "")).endswith("SineWaves"):
        raise PlotError(f"{run_dir} is not a sine run (data={data.get('name', 'unknown')}): the sine figure "
                        "plots regression curves. Pass two runs made with `data=sine`.")
    return state


class SineFigure(NamedTuple):
    """One sine task and three adapted predictors on a dense grid (numpy arrays, 1-D)."""

    x: np.ndarray
    y_true: np.ndarray
    support_x: np.ndarray
    support_y: np.ndarray
    predictions: dict[str, np.ndarray]  # untrained, uniform, agreement
    titles: dict[str, str]
    steps: int
    lr: float


def _built(state: dict, trained: bool) -> Any:
    """metarun.run.build.build on the CPU from the checkpoint's config; `trained` loads its parameters."""
    import torch
    from omegaconf import OmegaConf

    from metarun.run.build import build

    cfg = OmegaConf.create(state["config"])
    cfg.device = "cpu"  # a figure needs no GPU, and the run's GPU may not be here
    # build seeds the global RNG for the model init; keep the caller's RNG stream untouched.
    with torch.random.fork_rng(devices=[]):
        parts = build(cfg)
    if trained:
        parts.load(state)
    return cfg, parts


def _sine_task(cfg: Any, source: Any, task_seed: int) -> tuple[Any, Any, Callable[[Any], Any]]:
    """One test task from the run's own data settings, and its true curve as a function of x."""
    import torch

    episode = source.sample("test", 1, cfg.ways, cfg.shots, cfg.queries, torch.Generator().manual_seed(task_seed))
    sx, sy, qx, qy = (t[0] for t in episode)
    # y = a sin(x + b) = (a cos b) sin x + (a sin b) cos x is linear in two coefficients, so the
    # noiseless points give them exactly, without depending on the order SineWaves draws a and b in.
    x, y = torch.cat([sx, qx]).double(), torch.cat([sy, qy]).double()
    coef = torch.linalg.lstsq(torch.cat([torch.sin(x), torch.cos(x)], dim=1), y).solution
    return sx, sy, lambda grid: torch.cat([torch.sin(grid), torch.cos(grid)], dim=1) @ coef


def _adapted(parts: Any, sx: Any, sy: Any, grid: Any, steps: int, lr: float) -> np.ndarray:
    prediction = parts.algo.predict(parts.theta(), parts.objective, sx, sy, grid, steps, lr)
    return prediction.detach().reshape(-1).double().numpy()


def sine_figure_data(
    uniform: dict, agreement: dict, task_seed: int = 0, steps: int | None = None, lr: float | None = None,
    points: int = GRID_POINTS,
) -> SineFigure:
    """The figure's numbers from two checkpoints: one test task (drawn with `task_seed` from the uniform run's
    data settings), its true curve on a dense grid over x_range, and the grid predictions after `steps`
    test-time steps (default: the uniform run's eval.steps and eval.lr) from the untrained initialisation
    (the uniform run's config rebuilt: build seeds the init with cfg.seed), and each run's trained parameters.
    """
    import torch

    cfg, init = _built(uniform, trained=False)
    steps = cfg.eval.steps if steps is None else steps
    lr = cfg.eval.lr if lr is None else lr
    sx, sy, truth = _sine_task(cfg, init.source, task_seed)
    low, high = cfg.data.x_range
    grid = torch.linspace(low, high, points, dtype=sx.dtype).unsqueeze(1)
    predictions, titles = {}, {}
    for role, state, trained in (("untrained", uniform, False), ("uniform", uniform, True),
                                 ("agreement", agreement, True)):
        run_cfg, parts = (cfg, init) if role == "untrained" else _built(state, trained)
        predictions[role] = _adapted(parts, sx, sy, grid, steps, lr)
        method = f"{run_cfg.algo.name} + {run_cfg.weighting.name}"
        titles[role] = f"untrained init (seed {run_cfg.seed})" if role == "untrained" else f"{method} (trained)"
    return SineFigure(grid.reshape(-1).double().numpy(), truth(grid.double()).reshape(-1).numpy(),
                      sx.reshape(-1).double().numpy(), sy.reshape(-1).double().numpy(), predictions, titles, steps,
                      float(lr))


def plot_sine(data: SineFigure, path: Path) -> Path:
    fig, axes = new_figure(1, len(ROLES), (15, 4.5), sharey=True)
    for ax, role in zip(axes[0], ROLES, strict=True):
        mse = float(np.mean((data.predictions[role] - data.y_true) ** 2))
        ax.plot(data.x, data.y_true, color="black", linewidth=1.5, label="true function")
        ax.plot(data.x, data.predictions[role], color="C3", linestyle="--", label=f"after {data.steps} steps")
        ax.scatter(data.support_x, data.support_y, color="C0", zorder=3, label=f"{len(data.support_x)} support points")
        ax.set(xlabel="x", title=f"{data.titles[role]}\nMSE on the grid: {mse:.3f}")
    axes[0, 0].set_ylabel("y")
    axes[0, 0].legend(fontsize="small")
    fig.suptitle(f"One sine test task, {data.steps} test-time steps of lr {data.lr:g} from each initialisation")
    return save(fig, path)


def sine(uniform_dir: Path, agreement_dir: Path, out: Path | None, task_seed: int, steps: int | None,
         lr: float | None) -> list[Path]:
    states = [load_sine_checkpoint(Path(d)) for d in (uniform_dir, agreement_dir)]
    data = sine_figure_data(*states, task_seed=task_seed, steps=steps, lr=lr)
    return [plot_sine(data, Path(out or Path(uniform_dir).resolve().parent) / "sine.png")]


# ----------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Figures from metarun run or multirun folders (PNG files).")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("curves", "training loss and validation curves (curves_loss.png, curves_val.png)"),
                       ("weights", "per-iteration task-weight statistics (weights.png)")):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run or multirun folders")
        s.add_argument("--out", type=Path, help="where to write the figures (default: the first DIR)")
    s = sub.add_parser("sine", help="the gradient-agreement paper's sine figure (sine.png)",
                       description="One sine test task: predictions after test-time adaptation from the untrained "
                                   "init and from each run's trained parameters.")
    s.add_argument("uniform", type=Path, metavar="UNIFORM_RUN", help="run folder with checkpoint.pt")
    s.add_argument("agreement", type=Path, metavar="AGREEMENT_RUN", help="run folder with checkpoint.pt")
    s.add_argument("--out", type=Path, help="where to write sine.png (default: UNIFORM_RUN's parent folder)")
    s.add_argument("--task-seed", type=int, default=0, help="seed of the generator that draws the task")
    s.add_argument("--steps", type=int, help="test-time adaptation steps (default: the run's eval.steps)")
    s.add_argument("--lr", type=float, help="test-time learning rate (default: the run's eval.lr)")
    return p


def run_cli(argv: list[str] | None = None) -> int:
    """The command; returns the exit code (2 with a one-paragraph message for requests it cannot draw)."""
    args = parser().parse_args(argv)
    try:
        require_matplotlib()  # before reading runs or importing torch
        if args.command == "sine":
            if args.steps is not None and args.steps < 0:
                raise PlotError(f"--steps {args.steps} is invalid: use 0 (no adaptation) or more.")
            sine(args.uniform, args.agreement, args.out, args.task_seed, args.steps, args.lr)
        else:
            (curves if args.command == "curves" else weights)(args.dirs, args.out)
    except PlotError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`metarun-plot`)."""
    sys.exit(run_cli(argv))


if __name__ == "__main__":
    main()
