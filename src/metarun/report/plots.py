"""`metarun-plot`: figures from run folders (learning curves, task weights, the sine-regression figure).

matplotlib is an optional extra (`pip install "metarun[plot]"`) and is imported only inside the
functions that draw. The sine figure's numbers come from `metarun.run.sine_figure` (torch); this module
only draws them.
Figures are drawn on matplotlib's Agg canvas directly, never through pyplot: no GUI backend,
no global figure registry to leak from when called in-process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from metarun.report.results import METRICS, RESULTS
from metarun.report.runs import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROG = "metarun-plot"
SMOOTH = 10  # logged rows in the training-loss moving average: light enough to keep the trend's shape
GRID_POINTS = 401
ROLES = ("untrained", "uniform", "agreement")


class PlotError(Exception):
    """A request that cannot be drawn; the message names the folder and the fix (exit code 2)."""


# ----------------------------------------------------------------------------- matplotlib


def require_matplotlib(command: str = PROG) -> None:
    """PlotError with the install command when matplotlib is missing (checked before any slow work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError(
            f'{command} draws with matplotlib, which is not installed here. Install the plotting extra with '
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


def _results(run_dir: Path) -> dict:
    """results.json, or nothing for a run still going (or a file it is writing)."""
    try:
        return json.loads((run_dir / RESULTS).read_text())
    except (OSError, ValueError):
        return {}


def run_label(run: Run) -> str:
    """`algo + weighting, seed N` from results.json; a run still going has only its Hydra overrides."""
    if run.record:
        record = run.record
        return f"{record.get('algo', '?')} + {record.get('weighting', '?')}, seed {record.get('seed', '?')}"
    if (run.folder / ".hydra" / "overrides.yaml").is_file():
        return f"{' '.join(run.overrides) or 'defaults'} (unfinished)"
    return f"{run.folder.name} (unfinished)"


def logged_runs(dirs: Sequence[Path]) -> list[Run]:
    """Every run under `dirs` that has a training log, finished or not, each labelled for a legend."""
    check_dirs(dirs)
    paths = find_runs(dirs)
    if not paths:
        raise PlotError(f"no runs under {', '.join(map(str, dirs))}: a run folder holds {METRICS}, which metarun "
                        "writes from the first iteration. Pass run or multirun folders that metarun wrote "
                        "(e.g. outputs/multirun/DATE/TIME).")
    runs = [Run(p, _results(p)) for p in paths]
    labels = [run_label(r) for r in runs]
    # Two runs with the same label (same method and seed in different sweeps) get their folder added.
    return [replace(r, label=f"{lab} [{r.folder.parent.name}/{r.folder.name}]" if labels.count(lab) > 1 else lab)
            for r, lab in zip(runs, labels, strict=True)]


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
    runs = logged_runs(dirs)
    dest = Path(out or dirs[0])
    return [plot_loss(runs, dest), plot_validation(runs, dest)]


def weights(dirs: Sequence[Path], out: Path | None) -> list[Path]:
    runs = logged_runs(dirs)
    return [plot_weights(runs, Path(out or dirs[0]))]


# ----------------------------------------------------------------------------- sine


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
