"""What `metarun-data` knows of a dataset, declared beside its loader: where it is looked for, whether it is
there and verified, and how to get it.

The command is built from these declarations (a row of `metarun-data list` each, and a subcommand for
each that has something to fetch or verify), and `metarun-reproduce` asks them whether a preset's data is
present before it launches jobs. So a new dataset, a user's too (registered by a `metarun.plugins` entry
point), declares its own here instead of being written into the command:

    @declare
    class MyDataFetching(Fetching):
        name, target, summary = "mydata", "mypackage.MyData", "my images"
        root = "${oc.env:METARUN_DATA,~/.cache/metarun/data}/mydata"
        def missing(self, root): ...
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, TypeVar

COMMAND = "metarun-data"


class Fetching:
    """A dataset's declaration. Override `missing` and `status` to say whether it is there; `prepare` (with
    its `arguments`) where `metarun-data NAME` can download or verify it. Nothing here prints: `prepare`
    yields the lines the command prints, and raises DataError (DownloadError for a failed download)."""

    name: ClassVar[str]  # its `data=` option, and its `metarun-data` subcommand
    target: ClassVar[str]  # its loader's `_target_`, as its configs name it
    summary: ClassVar[str]  # its line in `metarun-data --help`
    description: ClassVar[str] = ""  # `metarun-data NAME --help`
    raw_description: ClassVar[bool] = False  # the description is laid out by hand (lists, indented lines)
    root: ClassVar[str | None] = None  # its config's `data.root` default (interpolations allowed); None: no files

    def default_root(self) -> Path | None:
        """Where `data=NAME` looks when `data.root` is not given (it follows METARUN_DATA)."""
        if self.root is None:
            return None
        from omegaconf import OmegaConf

        from metarun.data.cache import expand

        return expand(OmegaConf.create({"root": self.root}).root)

    def missing(self, root: Path) -> str | None:
        """Why the dataset is not under `root`, with how to get it; None where it is (or has no files)."""
        return None

    def status(self, root: Path | None) -> str:
        """Its `metarun-data list` status: present and verified, or missing and how to get it."""
        return self.summary

    def arguments(self, parser: argparse.ArgumentParser) -> None:
        """`metarun-data NAME`'s own options, besides `--root`."""

    def prepare(self, args: argparse.Namespace, root: Path) -> Iterator[str]:
        """Download or verify the dataset under `root`, yielding what to say of each step."""
        raise NotImplementedError

    @property
    def preparable(self) -> bool:
        return type(self).prepare is not Fetching.prepare


DECLARED: dict[str, Fetching] = {}
F = TypeVar("F", bound=type[Fetching])


def declare(cls: F) -> F:
    """Class decorator: make a dataset's declaration known to `metarun-data` and `metarun-reproduce`."""
    DECLARED[cls.name] = cls()
    return cls


@functools.cache
def _load() -> None:
    """Import every module of this package (each dataset's declares itself), then the plugins."""
    import importlib
    import pkgutil

    import metarun.data
    from metarun.config.store import register_plugins

    for module in pkgutil.iter_modules(metarun.data.__path__):
        importlib.import_module(f"metarun.data.{module.name}")
    register_plugins()


def declarations() -> dict[str, Fetching]:
    """Every dataset's declaration, by name: metarun's own, and those that installed plugins register."""
    _load()
    return dict(sorted(DECLARED.items()))


def for_target(target: str) -> Fetching | None:
    """The declaration of the dataset whose loader a config names (`data._target_`), if it has one."""
    return next((d for d in declarations().values() if d.target == target), None)
