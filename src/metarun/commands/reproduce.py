"""`metarun-reproduce PRESET` (also `python scripts/reproduce.py PRESET`): run a published table's
cells and print ours beside the paper's.

The preset (`conf/paper/PRESET.yaml`) pins the shared settings and lists the cells, each with its
overrides and published number. Each cell becomes a config of a `cell` group written beside the
results, so one Hydra multirun runs every missing cell through whatever launcher is configured
(joblib, Slurm, ...), and each job's folder is named after its cell. A cell whose results.json
exists is not run again; one with only a checkpoint continues from it; one whose folder holds a run of
another config (other command-line overrides, another budget) is refused, never reported as this one.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf

from metarun.commands.exits import USAGE, console, error, fail
from metarun.config.resume import describe_differences, run_differences
from metarun.files import atomic_write
from metarun.report import verdict
from metarun.report.results import ResultsError, load_runs
from metarun.run.rundir import saved_config

if TYPE_CHECKING:
    import pandas as pd

PROG = "metarun-reproduce"
GROUPS = ("data", "model", "algo", "weighting")
BUDGET_KEYS = ("train.iterations", "train.meta_batch", "eval.tasks", "inner.steps", "eval.steps")
QUICK_DIVISOR = 100
QUICK_TEST_TASKS = 200
QUICK_NOTE = (f"QUICK BUDGET: iterations divided by {QUICK_DIVISOR} and at most {QUICK_TEST_TASKS} test tasks. "
              "These are NOT the paper's budgets; expect {worse}.")


def quick_note(metric: str) -> str:
    return QUICK_NOTE.format(worse="lower accuracy" if metric == "accuracy" else f"a higher {metric}")


def preset_names() -> list[str]:
    from metarun.config.store import config_dir

    return sorted(p.stem for p in (Path(config_dir()) / "paper").glob("*.yaml"))


def compose(*overrides: str) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from metarun.config.store import config_dir, register

    register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def cell_file(overrides: list[str], extra: dict[str, Any]) -> str:
    """A `cell` group config: group choices as defaults-list overrides, values as the body.

    Values are read with Hydra's own override parser, so `5e-4` or `[64,64]` mean what they
    mean on the command line.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups, values = [], dict[str, Any]()
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group in GROUPS:
            groups.append(f"  - override /{override.key_or_group}: {override.value()}")
        else:
            values[override.key_or_group] = override.value()
    body: dict[str, Any] = {}
    for key, value in {**values, **extra}.items():
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    head = "# @package _global_\n" + ("defaults:\n" + "\n".join(groups) + "\n" if groups else "")
    return head + (yaml.safe_dump(body, sort_keys=False) if body else "")


def quick(cfg: DictConfig) -> dict[str, Any]:
    return {"train.iterations": max(20, cfg.train.iterations // QUICK_DIVISOR), "train.eval_every": 0,
            "eval.tasks": min(cfg.eval.tasks, QUICK_TEST_TASKS), "eval.val_tasks": 0}


def cell_extra(name: str, paper: DictConfig, cell: str, budget: str) -> dict[str, Any]:
    """What the budget changes in a cell (quick: fewer iterations and test tasks), as `key: value`."""
    return quick(compose(f"+paper={name}", *paper.cells[cell].overrides)) if budget == "quick" else {}


def cell_command(name: str, paper: DictConfig, cell: str, args: argparse.Namespace) -> list[str]:
    """The overrides of the plain `metarun` command that runs the cell as this reproduction runs it."""
    extra = cell_extra(name, paper, cell, args.budget)
    return [f"+paper={name}", *paper.cells[cell].overrides, *(f"{k}={v}" for k, v in extra.items()),
            *args.overrides]


def foreign_cells(name: str, paper: DictConfig, cells: list[str], out: Path, args: argparse.Namespace) -> list[str]:
    """The cells whose folder holds a run of another config than this command asks for, with the differences."""
    foreign = []
    for cell in cells:
        job = [o for o in cell_command(name, paper, cell, args) if not o.startswith(("hydra.", "hydra/"))]
        # With --seeds each seed's run has its own folder, CELL/seed=S, and its own config.
        folders = {out / cell: job} if not args.seeds else {out / cell / f"seed={s}": [*job, f"seed={s}"]
                                                             for s in args.seeds}
        for folder, overrides in folders.items():
            saved = saved_config(folder)
            if saved is None:
                continue
            wanted = OmegaConf.to_container(compose(*overrides), resolve=True)
            changed = run_differences(saved, wanted)
            if changed:
                foreign.append(f"{folder} ({describe_differences(saved, wanted, changed, limit=3)})")
    return foreign


def missing_cell_data(name: str, paper: DictConfig, cells: list[str], args: argparse.Namespace) -> str | None:
    """Why the dataset of the first cell that needs an absent one cannot be read: said once, not by every job."""
    from metarun.commands.data import missing_data

    for cell in cells:
        job = [o for o in cell_command(name, paper, cell, args) if not o.startswith(("hydra.", "hydra/"))]
        said = missing_data(compose(*job).data)
        if said:
            return said
    return None


def side_by_side(paper: DictConfig, out: Path, seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per cell: ours beside the published number, with the verdict of the test named in its column
    (metarun.report.verdict): the published ± is used as what the preset says it is (`pm`)."""
    import pandas as pd

    runs = load_runs([out]) if out.is_dir() else pd.DataFrame()
    by_cell: dict[str, list[dict]] = {}
    for _, run in runs.iterrows():
        parts = Path(run["run_dir"]).relative_to(out).parts
        # One run per cell lives in CELL/; with --seeds, each seed's in CELL/seed=S/.
        if len(parts) == (2 if seeds else 1) and (not seeds or parts[1].startswith("seed=")):
            by_cell.setdefault(parts[0], []).append(run.to_dict())
    rows = []
    for name, cell in paper.cells.items():
        found = by_cell.get(name, [])
        half = None if cell.get("published_pm") is None else float(cell.published_pm)
        kind = str(cell.get("pm") or paper.pm)  # what the published ± is: the cell's, else the paper's
        if seeds:
            rows.append(verdict.seed_row(name, paper.metric, found, seeds, float(cell.published), half, kind))
        else:
            rows.append(verdict.task_row(name, paper.metric, found[0] if found else None, float(cell.published),
                                         half, kind))
    return pd.DataFrame(rows, columns=verdict.SEED_COLUMNS if seeds else verdict.TASK_COLUMNS)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="metarun-reproduce",
        description="Run a paper preset's cells (only those without results) and print ours beside the paper's.",
        epilog="Config overrides for every cell go after `--`, e.g. `-- device=cuda hydra.launcher.n_jobs=4`.",
    )
    parser.add_argument("preset", help="a conf/paper/ preset, e.g. ga_omniglot (hyphens work too)")
    parser.add_argument("--budget", choices=("full", "quick"), default="full",
                        help=f"quick: iterations / {QUICK_DIVISOR}, at most {QUICK_TEST_TASKS} test tasks")
    parser.add_argument("--cells", help="comma-separated cell names (default: all)")
    parser.add_argument("--launcher", help="a hydra/launcher option, e.g. local (joblib) or slurm")
    parser.add_argument("--out", type=Path, help="results folder (default: outputs/reproduce/PRESET/BUDGET)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; print the table of what exists")
    parser.add_argument("--seeds", type=_seed_list, metavar="S,S,...",
                        help="run every cell with each of these training seeds (into CELL/seed=S) and judge the mean "
                             "over seeds with the seeds' spread, the test set's error and the published error")
    parser.add_argument("--commands", action="store_true",
                        help="run nothing; print each cell as a plain `metarun` command (add --cfg job to see its "
                             "config)")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1:]
    return args


def _seed_list(text: str) -> list[int]:
    try:
        seeds = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a comma-separated list of whole numbers, e.g. 0,1,2") \
            from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. --seeds 0,1,2")
    return seeds


def _done(out: Path, cell: str, seeds: list[int] | None) -> bool:
    folders = [out / cell] if not seeds else [out / cell / f"seed={s}" for s in seeds]
    return all((f / "results.json").is_file() for f in folders)


def run_cli(argv: list[str] | None = None) -> int:
    args = parse(argv)
    name = args.preset.replace("-", "_")
    if name not in preset_names():
        return error(PROG, f"no preset `{args.preset}`. Available: {', '.join(preset_names())}.", USAGE)
    paper = compose(f"+paper={name}").paper
    chosen = list(paper.cells) if not args.cells else args.cells.split(",")
    unknown = [c for c in chosen if c not in paper.cells]
    if unknown:
        return error(PROG, f"preset {name} has no cell {', '.join(unknown)}. Its cells: {', '.join(paper.cells)}.",
                     USAGE)
    if args.commands:
        for cell in chosen:
            print(f"# {cell}\nmetarun {shlex.join(cell_command(name, paper, cell, args))}")
        return 0
    out = (args.out or Path("outputs") / "reproduce" / name / args.budget).resolve()
    foreign = foreign_cells(name, paper, chosen, out, args)
    if foreign:
        return error(PROG, f"{len(foreign)} cell folder(s) hold a run of another config than this command asks for: "
                     f"{'; '.join(foreign)}. Their results are not reported, nor their runs continued, as this "
                     "command's. Repeat the overrides (after `--`) and --budget of the command that made them, "
                     "choose another folder with --out, or delete those cell folders to run them again.", USAGE)
    code = 0
    todo = [c for c in chosen if not _done(out, c, args.seeds)]
    if todo and not args.table_only:
        absent = missing_cell_data(name, paper, todo, args)
        if absent:
            return error(PROG, f"{absent} None of the {len(todo)} cell(s) was launched.", USAGE)
        code = launch(name, paper, todo, out, args)
    notes = [quick_note(paper.metric)] if args.budget == "quick" else []
    notes += [f"Note: {n}" for n in paper.get("notes") or []]
    changes = [o for o in args.overrides if not o.startswith(("hydra.", "hydra/"))]  # how to run, not what
    if changes:
        notes.append(f"Command-line overrides for every cell: {' '.join(changes)}" + (
            " (these change the paper's budget)" if any(o.split("=")[0] in BUDGET_KEYS for o in changes)
            else ""))
    try:
        table = side_by_side(paper, out, args.seeds)
    except ResultsError as e:
        return fail(e, PROG)
    table = table[table["cell"].isin(chosen)]
    text = table.to_markdown(index=False, disable_numparse=True)  # keep "+0.12" and "0.130" as written
    print("\n".join([paper.source, *notes, text]))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "reproduce.md", "\n\n".join([f"# {name}", paper.source, *notes, text]) + "\n")
    atomic_write(out / "reproduce.csv", table.to_csv(index=False))
    print(f"wrote {out / 'reproduce.md'} and reproduce.csv")
    return code


def launch(name: str, paper: DictConfig, cells: list[str], out: Path, args: argparse.Namespace) -> int:
    """One multirun over the missing cells, each a generated `cell` config."""
    search = out / ".cells"
    (search / "cell").mkdir(parents=True, exist_ok=True)
    for cell in cells:
        overrides = list(paper.cells[cell].overrides)
        atomic_write(search / "cell" / f"{cell}.yaml", cell_file(overrides, cell_extra(name, paper, cell, args.budget)))
    command = [sys.executable, "-m", "metarun", "-m", f"+paper={name}", f"+cell={','.join(cells)}",
               f"hydra.searchpath=[file://{search}]", f"hydra.sweep.dir={out}",
               "hydra.sweep.subdir='${hydra.runtime.choices.cell}" + ("/seed=${seed}" if args.seeds else "") + "'"]
    if args.seeds:
        command.append(f"seed={','.join(map(str, args.seeds))}")
    if args.launcher:
        command.append(f"hydra/launcher={args.launcher}")
    print(f"running {len(cells)} cell(s) of {name} into {out}", flush=True)
    return subprocess.run([*command, *args.overrides]).returncode


def main(argv: list[str] | None = None) -> None:
    console(lambda: run_cli(argv))
