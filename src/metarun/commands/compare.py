"""`metarun-compare A B`: two runs (or seed sets) compared task by task on their shared test tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

from metarun.commands.exits import console, fail
from metarun.report.compare import CompareError, compare, load_side, report
from metarun.report.results import ResultsError

PROG = "metarun-compare"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare two runs task by task on their shared test tasks: A − B with its paired 95% CI, "
                    "paired t and Wilcoxon signed-rank p-values; across seeds when each side holds one run per seed.",
        epilog="Example: metarun-compare SWEEP SWEEP --a weighting=agreement --b weighting=uniform",
    )
    parser.add_argument("run_a", type=Path, help="a run folder, or a folder of runs that differ only in seed")
    parser.add_argument("run_b", type=Path, help="the same for B")
    parser.add_argument("--a", action="append", default=[], metavar="KEY=VALUE",
                        help="keep only A's runs with this setting (e.g. weighting=agreement); repeatable")
    parser.add_argument("--b", action="append", default=[], metavar="KEY=VALUE", help="the same for B")
    args = parser.parse_args(argv)
    try:
        a, notes_a = load_side(args.run_a, args.a, "A")
        b, notes_b = load_side(args.run_b, args.b, "B")
        result = compare(a, b)
    except (CompareError, ResultsError) as e:
        return fail(e, PROG)
    print(report(result))
    for note in notes_a + notes_b:
        print(f"note: {note}")
    return 0


def entry() -> None:
    console(main)
