"""`metarun-plot`: figures from run folders (learning curves, task weights, the sine-regression figure)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarun.commands.exits import console, fail
from metarun.report.plots import PROG, PlotError, curves, plot_sine, require_matplotlib, weights


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
        return fail(e, PROG)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`metarun-plot`)."""
    console(lambda: run_cli(argv))


def sine(uniform_dir: Path, agreement_dir: Path, out: Path | None, task_seed: int, steps: int | None,
         lr: float | None) -> list[Path]:
    from metarun.run.sine_figure import load_sine_checkpoint, sine_figure_data

    states = [load_sine_checkpoint(Path(d)) for d in (uniform_dir, agreement_dir)]
    data = sine_figure_data(*states, task_seed=task_seed, steps=steps, lr=lr)
    return [plot_sine(data, Path(out or Path(uniform_dir).resolve().parent) / "sine.png")]
