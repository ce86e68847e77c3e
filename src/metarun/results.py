"""What a run leaves behind (results.json, scores.csv, metrics.csv) and the tables built from it.

No torch here: `metarun-table` must start fast and work on a machine that only has results.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from metarun.files import atomic_write

RESULTS = "results.json"
SCORES = "scores.csv"
METRICS = "metrics.csv"
FORMAT_VERSION = 1
TABLE_FILES = ("table.csv", "table.md", "table.tex")


def ci95(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width 1.96 * sd / sqrt(n), sd with Bessel's correction (n - 1)."""
    n = len(scores)
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 scores, got {n}")
    mean = math.fsum(scores) / n
    var = math.fsum((s - mean) ** 2 for s in scores) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def write_scores(out_dir: Path, scores: Sequence[float], before: Sequence[float]) -> Path:
    """One row per test task: its query score after adaptation, and before (theta itself)."""
    lines = ["task,score,score_before"] + [f"{i},{a!r},{b!r}" for i, (a, b) in enumerate(zip(scores, before,
                                                                                            strict=True))]
    path = Path(out_dir) / SCORES
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def write_results(out_dir: Path, record: dict) -> Path:
    """results.json is written last: its presence means the run finished."""
    path = Path(out_dir) / RESULTS
    atomic_write(path, json.dumps({"format": FORMAT_VERSION, **record}, indent=2) + "\n")
    return path


class MetricsLog:
    """metrics.csv, one row per logged iteration, flushed as it goes (a log, read while it grows)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()

    def write(self, row: dict) -> None:
        self._writer.writerow({k: row.get(k, "") for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def find_results(dirs: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for d in dirs:
        d = Path(d)
        found += [d / RESULTS] if (d / RESULTS).is_file() else sorted(d.rglob(RESULTS))
    return found


def load_runs(dirs: Iterable[Path]) -> pd.DataFrame:
    records = []
    for path in find_results(dirs):
        record = json.loads(path.read_text())
        record["run_dir"] = str(path.parent)
        records.append(record)
    return pd.DataFrame.from_records(records)


def setting_label(run: pd.Series) -> str:
    """The column a run belongs to; settings that change the numbers but are not the default are named."""
    if run.get("task_kind") == "regression":
        return f"{run['data']} {run['shots']}-shot ({run['metric']})"
    notes = []
    if run.get("bn_mode") == "support-statistics":
        notes.append("non-transductive")
    if run.get("rotate_test") is False:
        notes.append("unrotated test")
    unit = "accuracy %" if run["metric"] == "accuracy" else run["metric"]
    return f"{run['data']} {run['ways']}-way {run['shots']}-shot ({', '.join([unit, *notes])})"


def cell(run: pd.Series) -> str:
    if run["metric"] == "accuracy":  # papers print percentages
        return f"{100 * run['mean']:.2f} ± {100 * run['ci95']:.2f}"
    return f"{run['mean']:.4g} ± {run['ci95']:.2g}"


def method_label(run: pd.Series) -> str:
    return f"{run['algo']} + {run['weighting']}"


def build_table(runs: pd.DataFrame) -> pd.DataFrame:
    """A row per algorithm + weighting, a column per setting, cells `mean ± ci95`.

    Runs that share a cell but differ in seed get a row each (the seed in the row label),
    rather than being averaged silently.
    """
    runs = runs.copy()
    runs["method"] = runs.apply(method_label, axis=1)
    runs["setting"] = runs.apply(setting_label, axis=1)
    several_seeds = runs.groupby(["method", "setting"])["seed"].transform("nunique") > 1
    runs.loc[several_seeds, "method"] += " (seed " + runs.loc[several_seeds, "seed"].astype(str) + ")"
    runs["cell"] = runs.apply(cell, axis=1)
    table = runs.pivot_table(index="method", columns="setting", values="cell", aggfunc="first")
    table.columns.name = None
    return table.fillna("—")


def write_table(table: pd.DataFrame, dest: Path) -> list[Path]:
    dest = Path(dest)
    csv_path, md_path, tex_path = (dest / name for name in TABLE_FILES)
    atomic_write(csv_path, table.to_csv())
    atomic_write(md_path, table.to_markdown() + "\n")
    atomic_write(tex_path, table.to_latex(escape=True).replace("±", r"$\pm$"))
    return [csv_path, md_path, tex_path]
