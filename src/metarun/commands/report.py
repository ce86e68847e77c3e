"""`metarun-report DIR... [--out FILE]`: one self-contained HTML page of what runs wrote under the folders.

The page (metarun.report.html) holds the table as metarun-table builds it, the `--seeds` table for a sweep over
seeds, the verdicts of a metarun-reproduce folder, paired comparisons with a forest plot, learning curves, task
weights, what differs between runs and each run's config and environment. It opens with no network. No torch
here: the report of finished runs is made on any machine that has their folders.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from metarun import messages
from metarun.commands.exits import FAILED, console, error, fail
from metarun.files import atomic_write
from metarun.report import html
from metarun.report.plots import PlotError, require_matplotlib
from metarun.report.results import ResultsError

if TYPE_CHECKING:
    from omegaconf import DictConfig

PROG = "metarun-report"
NAME = "report.html"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="One self-contained HTML report (tables, paired comparisons, learning curves, configs) of every "
                    "run under run, multirun, --seeds, metarun-reproduce or study folders.",
        epilog="Example: metarun-report outputs/multirun/2026-11-27/10-00-00 (writes report.html there)",
    )
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run or multirun folders")
    p.add_argument("--out", type=Path, metavar="FILE", help=f"the HTML file to write (default: DIR/{NAME} of the "
                                                             "first folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command; returns the exit code: 2 with a one-paragraph message for folders that give no report."""
    args = parser().parse_args(argv)
    dest = args.out or args.dirs[0] / NAME
    try:
        check(args.dirs, dest)
        require_matplotlib(PROG)  # before reading a single run
        report = html.gather(args.dirs)
        report.reproductions = reproductions(args.dirs)
        page = html.render(report)
    except (html.ReportError, ResultsError, PlotError) as e:
        return fail(e, PROG)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, page)
    except OSError as e:
        return error(PROG, messages.cannot_write(e, "`--out FILE`", dest), FAILED)
    print(f"wrote {dest}")
    return 0


def check(dirs: list[Path], dest: Path) -> None:
    """Folders that exist and are folders, and an --out that is not one."""
    files = [str(d) for d in dirs if d.is_file()]
    if files:
        raise html.ReportError(
            f"{', '.join(files)} {'is a file' if len(files) == 1 else 'are files'}, not a folder. Pass the run or "
            f"multirun folder that holds it (e.g. `{PROG} {Path(files[0]).parent}`).")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise html.ReportError(f"no such folder: {', '.join(missing)}. Pass the run or multirun folders that "
                               "metarun wrote (e.g. outputs/multirun/DATE/TIME).")
    if dest.is_dir():
        raise html.ReportError(f"--out {dest} is a folder; --out takes the HTML file to write, e.g. "
                               f"--out {dest / NAME}.")


def reproductions(dirs: list[Path]) -> list[html.Reproduction]:
    """The verdicts of each metarun-reproduce folder among `dirs`, as `metarun-reproduce --table-only` prints them."""
    from metarun.commands.reproduce import side_by_side

    found = []
    for folder in dirs:
        preset = html.find_preset(folder)
        if preset is None:
            continue
        paper, notes = _paper(preset)
        notes = [f"Note: {n}" for n in paper.get("notes") or []] + notes
        table = side_by_side(paper, folder, preset.seeds)
        found.append(html.Reproduction(preset.name, folder, str(paper.source), notes, table))
    return found


def _paper(preset: html.Preset) -> tuple[DictConfig, list[str]]:
    """The preset as this metarun has it (its published numbers may have been corrected since the runs), or, where
    it has none by that name or cannot compose it, the paper block the runs saved; and a note saying which."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from metarun.commands.reproduce import compose, preset_names

    if preset.name in preset_names():
        try:
            return compose(f"+paper={preset.name}").paper, []
        except (HydraException, OmegaConfBaseException) as e:
            why = f"this metarun cannot compose its preset {preset.name} ({messages.one_paragraph(str(e))})"
    else:
        why = f"this metarun has no preset {preset.name}"
    return OmegaConf.create(preset.saved), [f"{why[0].upper()}{why[1:]}: the published numbers are those the runs "
                                           "saved."]


def entry() -> None:
    console(main)
