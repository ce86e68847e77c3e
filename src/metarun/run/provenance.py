"""Which code a run ran: the git commit of the checkout that holds metarun's own files, and whether that
checkout's tracked files differ from it. A number without its commit cannot be checked, and a run continued
on other code is not the run it continues (resume is bit-exact only on the same code), so both are written
down with the run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parents[1]  # the metarun package folder


class Code(NamedTuple):
    commit: str | None  # None: not run from a git checkout (an installed copy)
    changed: bool | None  # the checkout's tracked files differ from the commit (None without a commit)


def git(folder: Path, *args: str) -> str | None:
    """git's output run in `folder`, or None where git is missing or fails."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def running_code(package: Path = PACKAGE) -> Code:
    """The commit of the code in `package` (metarun's). A package inside an ignored folder of some checkout (a
    virtual environment in a clone) is not that checkout's code, so the package's own files must be tracked."""
    if not git(package, "ls-files", "--error-unmatch", "__init__.py"):
        return Code(None, None)
    commit = (git(package, "rev-parse", "HEAD") or "").strip() or None
    status = git(package, "status", "--porcelain", "--untracked-files=no") if commit else None
    return Code(commit, None if status is None else bool(status.strip()))


def continued(before: list[str], now: str | None) -> list[str]:
    """The commits a run was trained on, oldest first, now this session's: a checkpoint keeps them."""
    return before if now is None or (before and before[-1] == now) else [*before, now]


def switch_note(before: list[str], now: str | None) -> str | None:
    """What a run continued on another commit says once, as its results.json will: it is not bit-exact with an
    uninterrupted run on either commit."""
    if now is None or not before or before[-1] == now:
        return None
    return (f"note: this run was trained up to now on commit {before[-1][:12]} and continues on {now[:12]}: its "
            "results are not those of an uninterrupted run on either (results.json lists both under "
            "`trained_commits`).")
