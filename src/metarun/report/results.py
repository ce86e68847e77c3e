"""What a run leaves behind (results.json, scores.csv, metrics.csv) and the tables built from it.

No torch here: `metarun-table` must start fast and work on a machine that only has results. pandas is
imported by the functions that build tables, not by a run before it trains.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarun.files import atomic_write
from metarun.report import record as record_fields
from metarun.report.settings import config_of
from metarun.version import __version__

if TYPE_CHECKING:
    import pandas as pd

RESULTS = "results.json"
FAILED = "failed.json"
SCORES = "scores.csv"
METRICS = "metrics.csv"
FORMAT_VERSION = 1
READABLE_FORMATS = (1,)  # every results.json metarun has written so far is format 1
TABLE_SUFFIXES = (".csv", ".md", ".tex")


CI_METHOD = "t"  # recorded in results.json as `ci95_method`: how `ci95` was computed


def ci95(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and the t-based 95% CI half-width t(0.975, n − 1) · sd / √n over test tasks (sd with n − 1).

    Student's t, not 1.96: with few tasks the normal quantile is too narrow (13% at 10 tasks). One
    score has no interval: the half-width is nan, and every printer says so instead of "± 0".
    """
    from metarun.report.stats import t_interval

    if not scores:
        raise ValueError("a mean needs at least one score")
    mean, half, _ = t_interval(scores)
    return mean, half


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
    missing = [k for k in record_fields.required() if k not in record]
    if missing:
        raise ResultsError(f"{path} (format {fmt}) lacks {', '.join(missing)}, which every results file of that "
                           f"format has; it was edited or cut short. {rerun}")
    return record


def load_runs(dirs: Iterable[Path]) -> pd.DataFrame:
    """One record per run folder; jobs without results.json are kept with status failed or missing.

    A results.json in a format this metarun cannot read raises ResultsError naming it.
    """
    import pandas as pd

    records = []
    for job in find_jobs(dirs):
        if (job / RESULTS).is_file():
            record = {"status": "finished", **read_results(job / RESULTS)}
        else:
            record = unfinished(job)
        record["run_dir"] = str(job)
        records.append(record)
    return pd.DataFrame.from_records(records)


def settings_record(cfg: Any) -> dict[str, Any]:
    """The results record's entries that come from the config alone: a finished run's and an unfinished job's."""
    inherited = {"_target_", "in_channels", "image_size", "out_features", "in_features"}
    return {
        "ways": cfg.ways, "shots": cfg.shots, "queries": cfg.queries,
        "train_shots": cfg.train.shots, "train_queries": cfg.train.queries,
        "algo": cfg.algo.name, "weighting": cfg.weighting.name,
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        # The model's own settings, e.g. `filters=64 downsample=stride features=mean` (no interpolated sizes).
        "model_settings": " ".join(f"{k}={v}" for k, v in cfg.model.items() if k not in inherited),
        "seed": cfg.seed, "iterations": cfg.train.iterations,
        "meta_batch": cfg.train.meta_batch, "inner_steps": cfg.inner.steps, "inner_lr": cfg.inner.lr,
        "eval_steps": cfg.eval.steps, "eval_lr": cfg.eval.lr, "eval_seed": cfg.eval.seed,
        # Which parameters were tested; configs from before the setting tested the last iteration's.
        "select": cfg.eval.get("select", "last"),
    }


def task_kind(data: Any) -> tuple[str, str]:
    """A dataset's kind and metric from its config node. metarun's own datasets are told apart as the config
    checks tell them (images: classification scored by accuracy; else regression scored by MSE), without
    importing their classes (torch); a user's dataset class is asked (tests/test_results.py holds the two
    to agree for every option of conf/data/)."""
    if str(data._target_).startswith("metarun.data."):
        return ("classification", "accuracy") if "channels" in data else ("regression", "mse")
    from hydra.utils import get_class

    source = get_class(data._target_)
    return source.kind, source.metric


def unfinished(job: Path) -> dict:
    """What the table needs about a job that wrote no results, from the config Hydra saved for it."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    kind, metric = task_kind(cfg.data)
    failure = json.loads((job / FAILED).read_text()) if (job / FAILED).is_file() else {}
    return {
        "status": "failed" if failure else "missing", "error": failure.get("error"), **settings_record(cfg),
        "data": cfg.data.name, "task_kind": kind, "metric": metric,
        "bn_mode": "transductive" if OmegaConf.select(cfg, "eval.transductive", default=True) else "support-statistics",
        "rotate_test": OmegaConf.select(cfg, "data.rotate_test"), "mean": math.nan, "ci95": math.nan,
    }


def setting_label(run: Mapping[str, Any]) -> str:
    """The column a run belongs to; settings that change the numbers but are not the default are named."""
    if run.get("task_kind") == "regression":
        return f"{run['data']} {run['shots']}-shot ({run['metric']})"
    notes = []
    if run.get("bn_mode") == "support-statistics":
        notes.append("non-transductive")
    if run.get("rotate_test") is False:
        notes.append("unrotated test")
    if run.get("split") == "lake":
        notes.append("Lake split")
    unit = "accuracy %" if run["metric"] == "accuracy" else run["metric"]
    return f"{run['data']} {run['ways']}-way {run['shots']}-shot ({', '.join([unit, *notes])})"


def no_ci(half: float | None) -> bool:
    """Whether a half-width is absent: one test task (or one seed) has no interval."""
    return half is None or math.isnan(half)


def pm(metric: str, mean: float, half: float | None) -> str:
    """mean ± half as tables print it: accuracy in percent (papers print percentages), anything else to 4
    significant digits; the mean alone where there is no interval."""
    if metric == "accuracy":
        text = f"{100 * mean:.2f}"
        return text if no_ci(half) else f"{text} ± {100 * half:.2f}"
    # `#`: trailing zeros kept, so that every CI of a table shows two significant digits ("± 0.50", not "± 0.5").
    text = f"{mean:#.4g}".rstrip(".")
    return text if no_ci(half) else f"{text} ± {f'{half:#.2g}'.rstrip('.')}"


def cell(run: Mapping[str, Any]) -> str:
    if run.get("status", "finished") != "finished":
        return str(run["status"])  # failed or missing: shown, never dropped
    half = run.get("ci95")
    return pm(run["metric"], run["mean"], half) + (" (1 task: no CI)" if no_ci(half) else "")


def method_label(run: Mapping[str, Any]) -> str:
    return f"{run['algo']} + {run['weighting']}"


GROUPS = ("data", "model", "algo", "weighting")


def config_settings(run_dir: Path) -> tuple[dict[str, Any], set[str]] | None:
    """A run's config as flat `key: value` (resolved), with its config-group choices as keys of their own
    (`model: conv4`), and the keys that only follow another by interpolation; None if it records none. Unlike
    `settings.run_settings`, every key is kept: a table names rows apart by whatever tells them apart."""
    config = config_of(run_dir)
    if config is None:
        return None
    written, flat = config
    following = {k for k, v in written.items() if isinstance(v, str) and v.startswith("${")}
    hydra = Path(run_dir) / ".hydra" / "hydra.yaml"
    if hydra.is_file():
        from omegaconf import OmegaConf

        choices = OmegaConf.select(OmegaConf.load(hydra), "hydra.runtime.choices") or {}
        flat = flat | {group: choices[group] for group in GROUPS if group in choices}
    return flat, following


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower().replace("none", "null")
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(_value, value)) + "]"
    return str(value)


def varying(settings: Sequence[dict[str, Any]], following: set[str] = frozenset()) -> list[str]:
    """The keys whose values differ among the runs, seed last; a group choice (`model`) stands for its keys
    (`model.filters`, ...), and keys that only follow another (`eval.lr: ${inner.lr}`) are left out when
    something else tells the runs apart."""
    keys = {k for s in settings for k in s}
    differ = {k for k in keys if len({_value(s.get(k, "—")) for s in settings}) > 1}
    # A group choice some runs do not record (a metarun-eval folder's) says nothing: their keys tell them apart.
    differ -= {g for g in GROUPS if any(g not in s for s in settings)}
    differ -= {k for k in differ if any(k.startswith(f"{g}.") for g in differ & set(GROUPS))}
    if differ - following:
        differ -= following
    return sorted(differ, key=lambda k: (k == "seed", k))


def row_labels(runs: pd.DataFrame, ignore: Sequence[str] = ()) -> pd.Series:
    """Each run's row: its method, and where several runs share a method and a column, the settings in which
    they differ (`maml + uniform (inner.lr=0.02)`), read from their configs; runs with identical settings are
    named by their folders. No two runs of a column share a row, so none is merged or dropped.

    `ignore`: settings not to name (a caller that aggregates over seeds passes `seed`).
    """
    labels = runs["method"].copy()
    for _, group in runs.groupby(["method", "setting"], sort=False):
        if len(group) < 2:
            continue
        found = [config_settings(d) for d in group["run_dir"]]
        if all(f is not None for f in found):
            settings = [f[0] for f in found]
            following = set.intersection(*(f[1] for f in found))
        elif all(f is None for f in found):
            # No config: the record's settings tell the runs apart (record.py says which fields are settings).
            settings = [{k: v for k, v in r.items() if record_fields.describes_the_run(k)} for _, r in group.iterrows()]
            following = set()
        else:
            settings, following = [], set()
        keys = [k for k in varying(settings, following) if k not in ignore] if settings else []
        named = [", ".join(f"{k}={_value(s.get(k, '—'))}" for k in keys) for s in settings] if keys else []
        if not named or len(set(named)) < len(named):
            named = _folders(group["run_dir"].tolist())
        for index, name in zip(group.index, named, strict=True):
            labels[index] = f"{labels[index]} ({name})"
    return labels


def _folders(run_dirs: list[str]) -> list[str]:
    """The part of each folder's path that tells it apart from the others."""
    paths = [Path(d).absolute().parts for d in run_dirs]
    common = 0
    while all(len(p) > common + 1 and p[common] == paths[0][common] for p in paths):
        common += 1
    return ["run " + "/".join(p[common:]) for p in paths]


def run_table(record: Mapping[str, Any]) -> str:
    """The table of one finished run, as `metarun-table` prints it (Markdown), without importing pandas: a
    run prints it as it ends, and a finished folder when it is asked for again."""
    from tabulate import tabulate

    run = {"status": "finished", **record}
    return tabulate([[method_label(run), cell(run)]], headers=["method", setting_label(run)], tablefmt="pipe")


def build_table(runs: pd.DataFrame) -> pd.DataFrame:
    """A row per algorithm + weighting, a column per setting, cells `mean ± ci95`.

    Every run has a cell of its own: runs that share a method and a setting but differ in anything else
    (seed, a learning rate, a trial of a search) get a row each, named by what differs; none is averaged
    or dropped.
    """
    runs = runs.copy()
    runs["method"] = runs.apply(method_label, axis=1)
    runs["setting"] = runs.apply(setting_label, axis=1)
    runs["row"] = row_labels(runs)
    runs["cell"] = runs.apply(cell, axis=1)
    table = runs.pivot_table(index="row", columns="setting", values="cell", aggfunc="first")
    # Numbers in labels in their numeric order (eval.steps=3 before eval.steps=10, 5-way before 20-way).
    table = table.reindex(index=sorted(table.index, key=natural), columns=sorted(table.columns, key=natural))
    table.index.name, table.columns.name = "method", None
    return table.fillna("—")


def natural(label: str) -> tuple:
    """A sort key that orders the numbers inside a label by value: ("eval.steps=", 3.0, ")") < (…, 10.0, …)."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e-?\d+)?)", label)
    return tuple(float(p) if i % 2 else p for i, p in enumerate(parts))


def write_table(table: pd.DataFrame, dest: Path, stem: str = "table") -> list[Path]:
    """STEM.csv, STEM.md and STEM.tex in `dest` (`--seeds` writes its own stem, beside the per-run table)."""
    dest = Path(dest)
    csv_path, md_path, tex_path = (dest / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES)
    atomic_write(csv_path, table.to_csv())
    atomic_write(md_path, table.to_markdown() + "\n")
    atomic_write(tex_path, table.to_latex(escape=True).replace("±", r"$\pm$"))
    return [csv_path, md_path, tex_path]
