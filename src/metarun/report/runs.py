"""One run folder as the report commands read it: `metarun-compare`, `metarun-plot` and `metarun-report` share it.

What a command needs of a folder beyond its record (its settings, its training log, its config as
written) is read from the folder the first time it is asked for, so a command that only pairs scores
never parses a log, and one that only draws curves never resolves a config. No torch here.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarun.report.results import METRICS, method_label
from metarun.report.settings import run_settings

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Run:
    """A run folder. `record` is its results.json, or, for a run without one, what is known of it (a `status`
    of failed, missing or running, and its settings); `label` names it where several are shown side by side
    (a table's row, a curve's legend entry)."""

    folder: Path
    record: Mapping[str, Any]
    label: str = ""

    @property
    def status(self) -> str:
        return str(self.record.get("status") or ("finished" if self.record else "running"))

    @property
    def seed(self) -> Any:
        return self.record.get("seed")

    @property
    def metric(self) -> str | None:
        """results.json's metric (accuracy, mse); None while the run has not finished."""
        return self.record.get("metric")

    @property
    def method(self) -> str:
        """`algo + weighting`."""
        return method_label(self.record)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Its settings, flat, without those that cannot change its test scores (report.settings)."""
        return run_settings(self.folder, self.record)

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Its training log (metrics.csv); empty where it has none."""
        return read_metrics(self.folder)

    @cached_property
    def config(self) -> str | None:
        """.hydra/config.yaml as written, or None."""
        path = self.folder / ".hydra" / "config.yaml"
        return path.read_text() if path.is_file() else None

    @cached_property
    def overrides(self) -> list[str]:
        """Its command line's overrides (.hydra/overrides.yaml); none where that file is missing or unreadable."""
        import yaml

        path = self.folder / ".hydra" / "overrides.yaml"
        try:
            return [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else []
        except (OSError, yaml.YAMLError, TypeError):
            return []


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv as numbers, empty where there is none. A run still going may be mid-line: a last line without
    its newline is dropped, since its final field may be cut short (pandas would read it as a smaller number)."""
    import pandas as pd

    try:
        lines = (Path(run_dir) / METRICS).read_text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        frame = pd.read_csv(io.StringIO("".join(lines)), on_bad_lines="skip")
    except (pd.errors.EmptyDataError, OSError, UnicodeDecodeError):
        return pd.DataFrame()
    return frame.apply(pd.to_numeric, errors="coerce")
