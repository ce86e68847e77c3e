"""`metarun-data`: fetch, verify and list the datasets metarun reads.

    metarun-data list                        every dataset, where metarun looks, present and verified?
    metarun-data omniglot [--root DIR]       download the two official archives and verify them
    metarun-data miniimagenet [--root DIR]   verify your miniImageNet copy and build its cache

Each dataset declares what the command says and does for it, beside its loader (metarun.data.fetching):
a subcommand for each that can be fetched or verified, a row of `list` for every one. Errors are one
paragraph (`metarun-data: error: ...`): exit code 2 for data that is missing or wrong, 1 for a download
that failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from metarun.commands.exits import INTERRUPTED, console, fail, say
from metarun.data.cache import DataError, expand
from metarun.data.fetching import COMMAND, declarations, for_target

PROG = COMMAND


def missing_data(data: Any) -> str | None:
    """Why the dataset a config node names is absent, with how to get it, or None (present, or nothing to
    fetch). Checked once before a reproduction launches its jobs, which would each say it again."""
    declared = for_target(data._target_)
    return declared.missing(expand(data.root)) if declared is not None and declared.root is not None else None


def list_main(args: argparse.Namespace) -> int:
    rows = []
    for name, declared in declarations().items():
        root = declared.default_root()
        rows.append((name, "-" if root is None else str(root), declared.status(root)))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    print(f"{'dataset':<{width[0]}}  {'where':<{width[1]}}  status")
    for name, where, status in rows:
        print(f"{name:<{width[0]}}  {where:<{width[1]}}  {status}")
    print("(`where` follows METARUN_DATA; the cache follows METARUN_CACHE.)")
    return 0


def prepare_main(args: argparse.Namespace) -> int:
    declared = declarations()[args.command]
    root = expand(args.root) if args.root else declared.default_root()
    for line in declared.prepare(args, Path(root)):
        print(line)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description="Fetch, verify and list the datasets metarun reads.")
    preparable = {name: d for name, d in declarations().items() if d.preparable}
    commands = top.add_subparsers(dest="command", required=True, metavar="{" + ",".join(["list", *preparable]) + "}")
    commands.add_parser("list", help="every dataset, where metarun looks for it, present and verified?")
    for name, declared in preparable.items():
        sub = commands.add_parser(name, help=declared.summary, description=declared.description or declared.summary,
                                  formatter_class=argparse.RawDescriptionHelpFormatter if declared.raw_description
                                  else argparse.HelpFormatter)
        sub.add_argument("--root", help=f"the folder it is in, or goes to (default: {declared.default_root()}, "
                                        "which follows $METARUN_DATA)")
        declared.arguments(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run = list_main if args.command == "list" else prepare_main
    try:
        return run(args)
    except DataError as e:  # DownloadError among them: exits says which code each has
        return fail(e, PROG)
    except KeyboardInterrupt:
        say(PROG, "interrupted; no partial file was left under a dataset's name.")
        return INTERRUPTED


def entry() -> None:
    # The loaders say what they build and what they skip through logging.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    console(main)
