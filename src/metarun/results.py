"""What a run leaves behind (results.json, scores.csv, metrics.csv) and the tables built from it.

No torch here: `metarun-table` must start fast and work on a machine that only has results.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from metarun import __version__
from metarun.files import atomic_write

RESULTS = "results.json"
FAILED = "failed.json"
SCORES = "scores.csv"
METRICS = "metrics.csv"
FORMAT_VERSION = 1
READABLE_FORMATS = (1,)  # every results.json metarun has written so far is format 1
TABLE_KEYS = ("data", "ways", "shots", "algo", "weighting", "metric", "mean", "ci95", "seed")
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

    def __init__(self, path: Path, columns: Sequence[str], resume_after: int | None = None) -> None:
        """`resume_after=N`: keep the rows up to iteration N (a resumed run logs the rest again)."""
        self.columns = list(columns)
        kept = []
        if resume_after is not None and Path(path).is_file():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("iteration", "").isdigit()
                        and int(r["iteration"]) <= resume_after]
        # Rewritten atomically before appending: a crash here cannot cost the rows already logged.
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(Path(path), text.getvalue())
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)

    def write(self, row: dict) -> None:
        self._writer.writerow({k: row.get(k, "") for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_failure(out_dir: Path, message: str, exit_code: int) -> Path:
    """failed.json: why a job of a sweep stopped, so the table can mark its cell instead of dropping it."""
    path = Path(out_dir) / FAILED
    atomic_write(path, json.dumps({"format": FORMAT_VERSION, "status": "failed", "error": message,
                                   "exit_code": exit_code}, indent=2) + "\n")
    return path


def find_jobs(dirs: Iterable[Path]) -> list[Path]:
    """Run folders under `dirs`: those with results.json, and Hydra job folders (.hydra/config.yaml)."""
    found: set[Path] = set()
    for d in map(Path, dirs):
        if (d / RESULTS).is_file() or (d / ".hydra" / "config.yaml").is_file():
            found.add(d)
            continue
        found |= {p.parent for p in d.rglob(RESULTS)}
        found |= {p.parent.parent for p in d.rglob(".hydra/config.yaml")}
    return sorted(found)


class ResultsError(ValueError):
    """A results file that cannot be tabulated; the message names it and the fix."""


def read_results(path: Path) -> dict:
    """A results.json record, after checking that it is one of the formats this metarun reads."""
    rerun = (f"To tabulate it, delete it and run the same command again in {path.parent} (a checkpoint of the "
             "same config is evaluated again without training), or leave that folder out.")
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"{path} cannot be read as a results file ({e}). {rerun}") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{path} holds a JSON {type(record).__name__}, not a results record. {rerun}")
    fmt, writer = record.get("format"), record.get("metarun", "an unknown version")
    if fmt not in READABLE_FORMATS:
        newer = isinstance(fmt, int) and fmt > max(READABLE_FORMATS)
        what = "no format number" if fmt is None else f"format {fmt!r}"
        fix = (f"It was written by metarun {writer}, newer than this one ({__version__}): tabulate it with that "
               "version or upgrade." if newer else rerun)
        raise ResultsError(f"{path} has {what}; metarun {__version__} reads results format "
                           f"{', '.join(map(str, READABLE_FORMATS))}. {fix}")
    missing = [k for k in TABLE_KEYS if k not in record]
    if missing:
        raise ResultsError(f"{path} (format {fmt}) lacks {', '.join(missing)}, which every results file of that "
                           f"format has; it was edited or cut short. {rerun}")
    return record


def load_runs(dirs: Iterable[Path]) -> pd.DataFrame:
    """One record per run folder; jobs without results.json are kept with status failed or missing.

    A results.json in a format this metarun cannot read raises ResultsError naming it.
    """
    records = []
    for job in find_jobs(dirs):
        if (job / RESULTS).is_file():
            record = {"status": "finished", **read_results(job / RESULTS)}
        else:
            record = unfinished(job)
        record["run_dir"] = str(job)
        records.append(record)
    return pd.DataFrame.from_records(records)


def unfinished(job: Path) -> dict:
    """What the table needs about a job that wrote no results, from the config Hydra saved for it."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    sine = cfg.data.name == "sine"
    failure = json.loads((job / FAILED).read_text()) if (job / FAILED).is_file() else {}
    return {
        "status": "failed" if failure else "missing", "error": failure.get("error"),
        "data": cfg.data.name, "task_kind": "regression" if sine else "classification",
        "metric": "mse" if sine else "accuracy", "ways": cfg.ways, "shots": cfg.shots,
        "algo": cfg.algo.name, "weighting": cfg.weighting.name, "seed": cfg.seed,
        "bn_mode": "transductive" if OmegaConf.select(cfg, "eval.transductive", default=True) else "support-statistics",
        "rotate_test": OmegaConf.select(cfg, "data.rotate_test"), "mean": math.nan, "ci95": math.nan,
    }


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
    if run.get("status", "finished") != "finished":
        return str(run["status"])  # failed or missing: shown, never dropped
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
    # A finished run of a cell outranks a failed or missing attempt at it.
    runs = runs.sort_values("status", key=lambda st: st.fillna("finished") != "finished", kind="stable")
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
