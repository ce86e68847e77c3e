"""How a command ends: the one place that says `PROG: error: ...` and picks the exit code.

The exit codes follow one rule: 2 when the user has something to change (a setting, an argument, a folder to
pass, a file to fetch or repair), 1 when the work itself failed (a run diverged, a rank died, a disk filled).
Every exception type a command may end with is listed in `CODES`, by name so that no torch-importing module is
imported to read the table. In a distributed run every rank meets the same error; rank 0 alone says it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from metarun.ranks import rank

USAGE = 2
FAILED = 1
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away (`| head`)
INTERRUPTED = 130  # 128 + SIGINT

# Exception type (module.qualname) -> exit code; a subclass takes its nearest listed base's code.
CODES = {
    "metarun.config.schema.ConfigError": USAGE,  # also DataError, FolderTaken, OutOfMemory
    "metarun.data.download.DownloadError": FAILED,  # a DataError, but the network failed, not the user's input
    "metarun.report.results.ResultsError": USAGE,
    "metarun.report.compare.CompareError": USAGE,
    "metarun.report.seeds.SeedsError": USAGE,
    "metarun.report.plots.PlotError": USAGE,
    "metarun.report.html.ReportError": USAGE,
    "metarun.run.learner.LearnerError": USAGE,
    "metarun.run.train.Diverged": FAILED,
    "metarun.core.distributed.RankFailed": FAILED,
    "metarun.weighting.base.WeightingError": FAILED,
}


def code_of(error: BaseException) -> int | None:
    """The exit code for an exception a command ends with, or None for one that is a bug (it propagates)."""
    for cls in type(error).__mro__:
        code = CODES.get(f"{cls.__module__}.{cls.__qualname__}")
        if code is not None:
            return code
    return None


def rank_zero() -> bool:
    """Whether this process is rank 0 of a distributed run (torchrun, or a Slurm step of several tasks), or
    runs alone: rank 0 alone prints and writes."""
    return rank() == 0


def say(prog: str, message: str, every_rank: bool = False) -> None:
    """`PROG: message` on standard error, from rank 0 only unless each rank has its own to say."""
    if every_rank or rank_zero():
        print(f"{prog}: {message}", file=sys.stderr)


def error(prog: str, message: str, code: int) -> int:
    """Say `PROG: error: message`; returns `code`, for a command's `main` to return."""
    say(prog, f"error: {message}")
    return code


def fail(error_: BaseException, prog: str) -> int:
    """Say an exception a command ends with and return its code; re-raise one that is not listed (a bug)."""
    code = code_of(error_)
    if code is None:
        raise error_
    return error(prog, str(error_), code)


def stop(prog: str, message: str, code: int) -> NoReturn:
    """Say `PROG: message` and exit now, from inside a Hydra job or a launcher, where no `main` returns."""
    say(prog, message)
    after_rank_zero()
    sys.exit(code)


RANK_GRACE_S = 60


def after_rank_zero() -> None:
    """A rank other than 0 that stops with an error rank 0 says waits for rank 0 to say it and exit: torchrun
    stops the whole job at the first rank to exit, which must not cut rank 0 off before its message. torchrun
    ends this wait as soon as rank 0 exits; it is bounded in case rank 0 got past the error."""
    if not rank_zero():
        import time

        time.sleep(RANK_GRACE_S)


def quiet_pipe(entry: Callable[[], object]) -> object:
    """Run a command's entry; if the reader of its output went away (`metarun --help | head -1`), end quietly."""
    try:
        try:
            return entry()
        finally:
            sys.stdout.flush()  # here, not at exit, where a broken pipe can only be reported, not handled
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(BROKEN_PIPE)


def console(main: Callable[[], int | None]) -> NoReturn:
    """A console script: run `main` (which returns its exit code), quiet on a closed pipe."""
    code = quiet_pipe(main)
    sys.exit(code if isinstance(code, int) else 0)
