"""The numbers of the gradient-agreement paper's sine figure: one test task, and the predictions after
test-time adaptation from the untrained initialisation and from two runs' trained parameters (drawn by
`metarun.report.plots.plot_sine`)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metarun.report.plots import GRID_POINTS, PlotError, SineFigure
from metarun.run.checkpoint import FILENAME as CHECKPOINT


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
    grid = torch.linspace(low, high, points, dtype=sx.dtype, device=sx.device).unsqueeze(1)
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
