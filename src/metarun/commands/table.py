"""`metarun-table DIR...`: one table of every run under run or multirun folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarun import messages
from metarun.commands.exits import FAILED, USAGE, console, error, fail

PROG = "metarun-table"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tabulate mean ± 95% CI of every run (results.json) under run or multirun folders. Runs "
                    "that share a method and a setting get a row each, named by the settings in which they differ.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument("--out", type=Path, help="folder to write table.csv, table.md and table.tex to "
                                                 "(table_seeds.* with --seeds; made if missing; default: the "
                                                 "first folder)")
    parser.add_argument("--seeds", action="store_true",
                        help="a row per setting over runs that differ only in seed: the mean over seeds, its t-based "
                             "95%% CI across seeds, and each seed's CI over test tasks")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`metarun-table DIR...`: one table over every run found under the folders."""
    from metarun.report.results import ResultsError, build_table, load_runs, write_table

    args = parser().parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        return error(PROG, f"no such folder: {', '.join(missing)}. "
                     "Pass the run or multirun folders that metarun wrote (e.g. outputs/multirun/DATE/TIME).", USAGE)
    try:
        runs = load_runs(args.dirs)
    except ResultsError as e:
        return fail(e, PROG)
    if runs.empty:
        return error(PROG, f"no results.json under {', '.join(map(str, args.dirs))}. "
                     "A run writes results.json when it finishes; pass folders of finished runs.", USAGE)
    if args.seeds:
        from metarun.report.seeds import SeedsError, seed_table

        try:
            table = seed_table(runs)
        except SeedsError as e:
            return fail(e, PROG)
    else:
        table = build_table(runs)
    print(table.to_markdown())
    dest = args.out or args.dirs[0]
    try:
        dest.mkdir(parents=True, exist_ok=True)
        paths = write_table(table, dest, "table_seeds" if args.seeds else "table")
    except OSError as e:
        return error(PROG, messages.cannot_write(e, '`--out FOLDER`', dest), FAILED)
    for path in paths:
        print(f"wrote {path}")
    return 0


def entry() -> None:
    console(main)
