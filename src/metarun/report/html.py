"""`metarun-report`'s page: everything runs wrote under some folders, as one self-contained HTML file.

Two halves. `gather` reads what the runs wrote (results.json, scores.csv, metrics.csv, .hydra/) into a `Report`,
building each table the way its own command does (`metarun-table`, `--seeds`, `metarun-compare`), so the page
never shows a number the commands would not. `render` is a pure function of that `Report`: data in, HTML out,
styles inline and figures inline SVG (metarun.report.svg), so the file opens anywhere with no network.

Runs are grouped into arms: the runs of one method and settings that differ only in their training seed. Two
arms are compared task by task when they share the test stream and differ in nothing but the method (algo,
weighting): that is the question a sweep over methods asks; arms that differ in more are left to
`metarun-compare`, which says what it mixes. No torch here.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from metarun.report import svg
from metarun.report.compare import CompareError, Comparison, amount, check_same_stream, compare, interval, load_run
from metarun.report.compare import report as compare_text
from metarun.report.compare import verdict as compare_verdict
from metarun.report.plots import column
from metarun.report.results import (
    RESULTS,
    build_table,
    cell,
    load_runs,
    method_label,
    read_results,
    row_labels,
    setting_label,
)
from metarun.report.runs import Run
from metarun.report.seeds import SeedsError, seed_table
from metarun.report.settings import describe, differences, show
from metarun.report.stats import format_p
from metarun.version import __version__

MAX_POINTS = 300  # per curve: a 30,000-iteration run drawn point by point would be megabytes of SVG
MAX_PAIRS = 30
METHOD_KEYS = ("algo", "weighting")  # a setting under these (or a record's `weighting_vectors`) is the method's


class ReportError(ValueError):
    """Folders that give no report; the message names them and the fix (exit code 2)."""


# ============================================================================= reading what runs wrote


@dataclass
class Arm:
    """The runs of one method and settings, one per seed; `settings` without the seed."""

    method: str
    metric: str
    weighting: str
    settings: dict[str, Any]
    runs: list[Run]
    label: str = ""


@dataclass
class Pair:
    a: Arm
    b: Arm
    comparison: Comparison


@dataclass
class Reproduction:
    """A `metarun-reproduce` folder's verdicts, as that command prints them (built by the command's module)."""

    name: str
    folder: Path
    source: str
    notes: list[str]
    table: pd.DataFrame


@dataclass
class Report:
    dirs: list[Path]
    runs: list[Run]
    tables: dict[str, pd.DataFrame]  # per metric, as metarun-table builds it
    seed_tables: dict[str, pd.DataFrame]  # per metric, where the runs are a sweep over seeds
    arms: list[Arm]
    pairs: list[Pair]
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why
    reproductions: list[Reproduction] = field(default_factory=list)


def gather(dirs: Sequence[Path]) -> Report:
    """Every run under `dirs` and the tables, comparisons and curves of them. ResultsError for a results.json
    this metarun cannot read; ReportError for folders without runs."""
    frame = load_runs(dirs)
    if frame.empty:
        raise ReportError(no_runs(dirs))
    frame = frame.reset_index(drop=True)
    frame["method"] = frame.apply(method_label, axis=1)
    frame["setting"] = frame.apply(setting_label, axis=1)
    labels = row_labels(frame)  # the rows metarun-table gives these runs
    runs = [_run(row, labels[i]) for i, row in frame.iterrows()]
    metrics = sorted(frame["metric"].dropna().unique())
    tables = {m: build_table(frame[frame["metric"] == m]) for m in metrics}
    seeds = {m: t for m in metrics if (t := _seed_table(frame[frame["metric"] == m])) is not None}
    arms = arms_of(runs)
    pairs, notes = pairs_of(arms)
    return Report(list(map(Path, dirs)), runs, tables, seeds, arms, pairs, notes)


def no_runs(dirs: Iterable[Path]) -> str:
    return (f"no runs under {', '.join(map(str, dirs))}: a run folder holds results.json once it finishes (and "
            ".hydra/config.yaml from its start). Pass the run, multirun, `--seeds` or metarun-reproduce folders "
            "that metarun wrote (e.g. outputs/multirun/DATE/TIME).")


def _run(row: pd.Series, label: str) -> Run:
    folder = Path(row["run_dir"])
    if row["status"] == "finished":  # the file's own record: the frame turned whole numbers beside gaps into floats
        record = {"status": "finished", **read_results(folder / RESULTS), "run_dir": str(folder)}
    else:
        record = {k: v for k, v in row.items() if not _absent(v) and k not in ("method", "setting")}
    return Run(folder, record, label)


def _absent(value: Any) -> bool:
    """A field this run's record lacks (pandas fills it with nan where another run has it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seed_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """`metarun-table --seeds` where the runs are a sweep over seeds: some row holds several, and no row mixes
    other settings (the command refuses those; here they only mean the folder is not a seed sweep)."""
    if frame.groupby(["method", "setting"]).size().max() < 2:
        return None
    try:
        table = seed_table(frame)
    except SeedsError:
        return None
    return table


def arms_of(runs: Sequence[Run]) -> list[Arm]:
    """Runs grouped by everything but the seed; each arm named as the table names its rows."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        settings = _without_seed(run.settings)
        key = (run.method, run.record.get("metric"), tuple(sorted((k, show(v)) for k, v in settings.items())))
        groups.setdefault(key, []).append(run)
    arms = [Arm(method, str(metric), str(group[0].record.get("weighting")), _without_seed(group[0].settings),
                sorted(group, key=lambda r: (str(r.seed), str(r.folder))))
            for (method, metric, _), group in groups.items()]
    _name(arms, runs)
    return sorted(arms, key=lambda a: a.label)


def _without_seed(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "seed"}


def _name(arms: list[Arm], runs: Sequence[Run]) -> None:
    """An arm is its method; where a method has several arms, also the settings in which they differ (a few), or
    failing that the folder they lie in."""
    by_method: dict[str, list[Arm]] = {}
    for arm in arms:
        by_method.setdefault(arm.method, []).append(arm)
    root = _common([r.folder.absolute() for r in runs])
    for method, group in by_method.items():
        diffs = differences([a.settings for a in group]) if len(group) > 1 else {}
        # Keys every arm sets say what tells them apart; keys only some record (provenance) only that they differ.
        diffs = {k: v for k, v in diffs.items() if all(x is not None for x in v)} or diffs
        named = [", ".join(f"{k}={show(v[i])}" for k, v in diffs.items()) for i in range(len(group))]
        if len(diffs) > 4 or len(set(named)) < len(named):
            named = [_where(arm, root) for arm in group]
        for arm, name in zip(group, named, strict=True):
            arm.label = f"{method} ({name})" if diffs else method


def _common(folders: Sequence[Path]) -> Path:
    parts = [f.parts for f in folders]
    common = []
    for items in zip(*parts, strict=False):
        if len(set(items)) > 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path("/")


def _where(arm: Arm, root: Path) -> str:
    """The arm's folder below the runs' common one, without its seed folders (`CELL/seed=S` is the cell)."""
    paths = {"/".join(p for p in r.folder.absolute().relative_to(root).parts if not p.startswith("seed="))
             for r in arm.runs}
    return ", ".join(sorted(paths)) or "."


def pairs_of(arms: Sequence[Arm]) -> tuple[list[Pair], list[str]]:
    """Every two arms of different methods, otherwise equal, that share their test tasks: A − B paired."""
    scored, notes = {}, []
    root = _common([r.folder.absolute() for arm in arms for r in arm.runs])
    for arm in arms:
        scored[id(arm)] = _scored(arm, notes, root)
    pairs, mixed = [], 0
    for i, first in enumerate(arms):
        for second in arms[i + 1:]:
            a, b = sorted((first, second), key=lambda arm: (arm.weighting == "uniform", arm.label))
            runs_a, runs_b = scored[id(a)], scored[id(b)]
            if a.metric != b.metric or a.method == b.method or not runs_a or not runs_b:
                continue
            if not _same_stream(runs_a[0], runs_b[0]):
                continue
            if not _only_method(a, b):
                mixed += 1
                continue
            try:
                pairs.append(Pair(a, b, compare(runs_a, runs_b)))
            except CompareError as e:
                notes.append(f"{a.label} vs {b.label}: {e}")
    if mixed:
        notes.append(f"{mixed} other pair(s) of methods share their test tasks but differ in more than the method; "
                     "they are not compared here (metarun-compare compares them, saying what else differs).")
    if len(pairs) > MAX_PAIRS:
        notes.append(f"{len(pairs)} pairs of methods share their test tasks; the first {MAX_PAIRS} are shown.")
    return pairs[:MAX_PAIRS], notes


def _scored(arm: Arm, notes: list[str], root: Path) -> list[Run]:
    """The arm's finished runs with their per-task scores, one per seed. Several runs of one seed are repeats (a
    re-test by metarun-eval, a rerun): the first folder (the shallowest, the original) stands for the seed."""
    runs: dict[Any, Run] = {}
    repeats = []
    for run in sorted(arm.runs, key=lambda r: (len(r.folder.parts), str(r.folder))):
        if run.status != "finished":
            continue
        if run.seed in runs:
            repeats.append(str(run.folder.absolute().relative_to(root)))
            continue
        try:
            runs[run.seed] = load_run(run.folder)
        except CompareError as e:
            notes.append(str(e))
    if repeats:
        notes.append(f"{arm.label}: {len(repeats)} run(s) repeat a seed with the same settings; the comparisons take "
                     f"the first folder of each seed and leave out {', '.join(repeats)} (under {root}).")
    return [runs[seed] for seed in sorted(runs, key=str)]


def _same_stream(a: Run, b: Run) -> bool:
    try:
        check_same_stream(a, b)
    except CompareError:
        return False
    return True


def _only_method(a: Arm, b: Arm) -> bool:
    keys = differences([a.settings, b.settings])
    return all(k in METHOD_KEYS or k.startswith(tuple(f"{m}." for m in METHOD_KEYS)) or k == "weighting_vectors"
               for k in keys)


# ----------------------------------------------------------------------------- metarun-reproduce folders


@dataclass(frozen=True)
class Preset:
    """A metarun-reproduce output folder: its preset's name, the paper block its runs saved, and its seeds
    (None: one run per cell, in CELL/; else one per seed, in CELL/seed=S/)."""

    name: str
    saved: dict[str, Any]
    seeds: list[int] | None


def find_preset(folder: Path) -> Preset | None:
    """Whether `folder` is what metarun-reproduce writes: cell folders whose runs' config holds the paper block of
    a preset that names that cell. Its config is `.hydra/config.yaml`, or `config.yaml` in a copy kept as
    evidence (docs/results/)."""
    import yaml

    found, seeds = None, set()
    for pattern in ("*/.hydra/config.yaml", "*/config.yaml", "*/seed=*/.hydra/config.yaml", "*/seed=*/config.yaml"):
        for path in sorted(Path(folder).glob(pattern)):
            parts = path.relative_to(folder).parts
            try:
                paper = (yaml.safe_load(path.read_text()) or {}).get("paper")
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if not isinstance(paper, dict) or parts[0] not in (paper.get("cells") or {}):
                continue
            found = found or paper
            if parts[1].startswith("seed=") and parts[1][5:].isdigit():
                seeds.add(int(parts[1][5:]))
    if found is None:
        return None
    seeds |= _swept_seeds(folder) if seeds else set()
    return Preset(str(found.get("name", Path(folder).name)), found, sorted(seeds) or None)


def _swept_seeds(folder: Path) -> set[int]:
    """The seeds the multirun was asked for (`seed=0,1,2`), so that a seed whose folder was never made is
    shown as missing rather than left out."""
    import yaml

    try:
        saved = yaml.safe_load((Path(folder) / "multirun.yaml").read_text()) or {}
        task = saved["hydra"]["overrides"]["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return set()
    values = [o.partition("=")[2] for o in task if isinstance(o, str) and o.startswith("seed=")]
    return {int(s) for v in values for s in v.split(",") if s.strip().isdigit()}


# ----------------------------------------------------------------------------- curves from metrics.csv


def binned(x: pd.Series, y: pd.Series, points: int = MAX_POINTS) -> tuple[np.ndarray, ...]:
    """(x, mean, min, max) over consecutive bins of rows, at most `points` bins: a long run's curve keeps its
    shape, and a short one (fewer rows than bins) is drawn row by row."""
    xs, ys = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
    if len(xs) == 0:
        return xs, ys, ys, ys
    bins = np.array_split(np.arange(len(xs)), min(points, len(xs)))
    pick = [(xs[b].mean(), ys[b].mean(), ys[b].min(), ys[b].max()) for b in bins]
    return tuple(np.array(v) for v in zip(*pick, strict=True))


def bin_size(arm: Arm) -> int:
    """Logged rows per point in the arm's longest curve (1: every row drawn)."""
    rows = max((len(r.metrics) for r in arm.runs), default=0)
    return max(1, math.ceil(rows / MAX_POINTS))


def run_name(run: Run) -> str:
    said = f"seed {run.seed}" if run.seed is not None else run.folder.name
    return said if run.status == "finished" else f"{said} ({run.status})"


def curve_panels(arm: Arm) -> list[svg.Panel]:
    """Training loss and validation mean per run of the arm (seeds overlaid)."""
    loss, val = [], []
    for run in arm.runs:
        rows = column(run.metrics, "loss_after")
        x, y, _, _ = binned(rows["iteration"], rows["loss_after"])
        loss.append(svg.Line(run_name(run), x, y))
        rows = column(run.metrics, "val_mean", "val_ci95")
        mean, half = rows["val_mean"].to_numpy(float), rows["val_ci95"].to_numpy(float)
        val.append(svg.Line(run_name(run), rows["iteration"].to_numpy(float), mean, mean - half, mean + half))
    per = bin_size(arm)
    every = "each logged iteration" if per == 1 else f"mean over each {per} logged iterations"
    return [svg.Panel(f"training query loss after adaptation ({every})", "loss", loss, log=True),
            svg.Panel("validation: mean ± 95% CI over validation tasks", f"validation {arm.metric}", val,
                      empty="no validation rows (eval.val_tasks=0 or train.eval_every=0)")]


def weight_panels(arm: Arm) -> list[svg.Panel]:
    """Smallest and largest task weight and the share of tasks weighted below 0, per iteration, seeds overlaid."""
    panels: dict[str, list[svg.Line]] = {"w_min": [], "w_max": [], "w_negative": []}
    for run in arm.runs:
        batch = _meta_batch(run)
        for name, lines in panels.items():
            rows = column(run.metrics, name)
            values = rows[name] / batch if name == "w_negative" and batch else rows[name]
            # The bins' means only: their ranges, drawn as bands, hid one seed's line behind the next's.
            x, mean, _, _ = binned(rows["iteration"], values)
            lines.append(svg.Line(run_name(run), x, mean))
    per = bin_size(arm)
    how = "per iteration" if per == 1 else f"mean over each {per} iterations"
    share = "share of the meta-batch" if all(_meta_batch(r) for r in arm.runs) else "count"
    return [svg.Panel(f"smallest task weight ({how})", "w_min", panels["w_min"], zero_line=True),
            svg.Panel(f"largest task weight ({how})", "w_max", panels["w_max"]),
            svg.Panel(f"tasks weighted below 0 ({share})", share, panels["w_negative"])]


def _meta_batch(run: Run) -> int | None:
    value = run.settings.get("train.meta_batch", run.record.get("meta_batch"))
    return int(value) if isinstance(value, int | float) and value > 0 else None


def has_weights(arm: Arm) -> bool:
    """Arms whose task weights are not all equal by construction, and whose runs logged them."""
    return arm.weighting != "uniform" and any(not column(r.metrics, "w_min").empty for r in arm.runs)


def has_curves(arm: Arm) -> bool:
    return any(not r.metrics.empty for r in arm.runs)


# ============================================================================= the page


STYLE = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--bad:#b3261e;--warn:#8a5a00}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
margin:0 auto;max-width:1180px;padding:20px 28px 60px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:34px 0 8px;padding-bottom:4px;border-bottom:1px solid
var(--line)}h3{font-size:15px;margin:22px 0 6px}
table{border-collapse:collapse;margin:8px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:4px 9px;text-align:left;vertical-align:top}
thead th{background:var(--soft)}tbody th{font-weight:600;background:#fbfcfd}
.scroll{overflow-x:auto}.muted{color:var(--muted)}
td.failed{color:var(--bad);font-weight:600}td.missing{color:var(--warn);font-weight:600}
.status-failed{color:var(--bad)}.status-missing{color:var(--warn)}
.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:6px 10px;margin:8px 0}
figure{margin:10px 0 18px}figure svg{display:block;max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:13px}
details{margin:4px 0}details>summary{cursor:pointer;color:var(--muted)}
pre{background:var(--soft);padding:8px 10px;overflow:auto;max-height:520px;font-size:12px;margin:4px 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
nav ul{display:flex;flex-wrap:wrap;gap:2px 18px;list-style:none;padding:0;margin:6px 0}
.run{border:1px solid var(--line);border-radius:6px;padding:6px 12px;margin:8px 0}
.run h3{margin:4px 0}.run dl{display:grid;grid-template-columns:max-content 1fr;gap:1px 12px;margin:4px 0}
.run dt{color:var(--muted)}.run dd{margin:0;min-width:0;overflow-wrap:anywhere}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class Section(NamedTuple):
    anchor: str
    title: str
    html: str


def render(rep: Report) -> str:
    """The whole page."""
    sections = [s for s in (_tables(rep), _reproductions(rep), _comparisons(rep), _curves(rep), _weights(rep),
                            _differences(rep), _runs(rep)) if s is not None]
    body = "\n".join([_summary(rep, sections), *(s.html for s in sections)])
    title = f"metarun report: {', '.join(map(str, rep.dirs))}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="metarun {esc(__version__)}">\n'
            # An empty icon: without one a browser asks the page's server (or folder) for /favicon.ico.
            f'<link rel="icon" href="data:,">\n<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n'
            f"<body>\n{body}\n</body>\n</html>\n")


def _section(anchor: str, title: str, *parts: str) -> Section:
    text = f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"
    return Section(anchor, title, text)


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], row_header: bool = True, ident: str = "",
          classes: Sequence[Sequence[str]] | None = None) -> str:
    """An HTML table; with `row_header` each row's first cell is its label (`<th scope=row>`)."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            if j == 0 and row_header:
                cells.append(f'<th scope="row">{esc(value)}</th>')
                continue
            cls = classes[i][j] if classes else ""
            cells.append(f'<td class="{cls}">{esc(value)}</td>' if cls else f"<td>{esc(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' id="{esc(ident)}"' if ident else ""
    return (f'<div class="scroll"><table{attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>")


def frame_table(frame: pd.DataFrame, ident: str = "", index: bool = True) -> str:
    """A table as its command prints it: `index` puts the frame's index (the row labels) first."""
    header = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    rows = [([label] if index else []) + list(map(_text, values)) for label, values in zip(
        frame.index, frame.itertuples(index=False), strict=True)]
    classes = [["", *(_status_class(v) for v in row[1:])] for row in rows]
    return table(header, rows, row_header=index, ident=ident, classes=classes)


def _text(value: Any) -> str:
    return "" if _absent(value) else str(value)


def _status_class(value: str) -> str:
    return value if value in ("failed", "missing") else ""


def _summary(rep: Report, sections: Sequence[Section]) -> str:
    counts: dict[str, int] = {}
    for run in rep.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda item: item[0] != "finished"))
    folders = "".join(f"<li><code>{esc(d.absolute())}</code></li>" for d in rep.dirs)
    nav = "".join(f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in sections)
    return (f"<header>\n<h1>metarun report</h1>\n<p>{esc(_kind(rep))}: {len(rep.runs)} run(s), {esc(said)}. "
            f"Made by metarun {esc(__version__)} from what the runs wrote, under:</p>\n<ul>{folders}</ul>\n"
            f"<nav><ul>{nav}</ul></nav>\n</header>")


def _kind(rep: Report) -> str:
    if rep.reproductions:
        return "A reproduction of " + ", ".join(r.name for r in rep.reproductions)
    if len(rep.runs) == 1:
        return "One run"
    if rep.seed_tables:
        return "A sweep over training seeds"
    return "A sweep"


def _tables(rep: Report) -> Section | None:
    parts = []
    if len(rep.tables) > 1:
        parts.append(_p(f"These runs score {len(rep.tables)} different metrics ({', '.join(rep.tables)}): one table "
                        "per metric, since their numbers cannot share a column.", "note"))
    parts.append(_p("As metarun-table prints it: a row per method, a column per setting, each cell one run's mean "
                    "± 95% CI over its test tasks (t-based; accuracy in %). Every run has a cell of its own; failed "
                    "and missing runs are shown as such.", "muted"))
    for metric, frame in rep.tables.items():
        parts.append(f"<h3>{esc(metric)}</h3>" if len(rep.tables) > 1 else "")
        parts.append(frame_table(frame, ident=f"results-{metric}"))
        if metric in rep.seed_tables:
            parts.append(f"<h3>Over training seeds ({esc(metric)})</h3>" + _p(
                "As metarun-table --seeds prints it: per method and setting, the mean over seeds with its t-based "
                "95% CI across seeds, and each seed's own mean ± CI over test tasks.", "muted"))
            parts.append(frame_table(rep.seed_tables[metric], ident=f"seeds-{metric}"))
    return _section("results", "Results", *parts)


def _reproductions(rep: Report) -> Section | None:
    parts = []
    for r in rep.reproductions:
        parts.append(f"<h3>{esc(r.name)} <span class=\"muted\">({esc(r.folder)})</span></h3>")
        parts.append(_p(r.source))
        parts += [_p(n, "note") for n in r.notes]
        parts.append(frame_table(r.table.set_index("cell"), ident=f"reproduction-{r.name}"))
    if not parts:
        return None
    return _section("reproduction", "Reproduction", _p(
        "As metarun-reproduce --table-only prints it: each cell of the preset, ours beside the published number, and "
        "whether they agree at 95% with the test named in the column.", "muted"), *parts)


def _methods(rep: Report) -> int:
    return len({arm.method for arm in rep.arms})


def _comparisons(rep: Report) -> Section | None:
    if not rep.pairs and not rep.notes and _methods(rep) < 2:
        return None
    parts = [_p("Methods that were tested on the same test tasks, with every other setting equal, compared as "
                "metarun-compare does: A − B task by task (paired t and Wilcoxon signed-rank), seed paired with "
                "seed, and across seeds where there are several.", "muted")]
    for metric in dict.fromkeys(p.a.metric for p in rep.pairs):
        pairs = [p for p in rep.pairs if p.a.metric == metric]
        parts.append(f"<h3>{esc(metric)}</h3>")
        parts.append(table(_PAIR_HEADER, [_pair_row(p) for p in pairs], ident=f"pairs-{metric}"))
        parts.append(_forest(metric, pairs))
        parts += [f"<details><summary>{esc(p.a.label)} vs {esc(p.b.label)}: metarun-compare's report</summary>"
                  f"<pre>{esc(compare_text(p.comparison))}</pre></details>" for p in pairs]
    if not rep.pairs:
        parts.append(_p("No two methods here were tested on the same test tasks with their other settings equal: "
                        "there is no pair to compare."))
    parts += [_p(n, "note") for n in rep.notes]
    return _section("comparisons", "Paired comparisons", *parts)


_PAIR_HEADER = ["A", "B", "seeds", "A mean", "B mean", "A − B (95% CI)", "p (paired t)", "p (Wilcoxon)", "verdict"]


def _pair_row(pair: Pair) -> list[str]:
    c = pair.comparison
    p, metric = c.overall, c.metric
    scope = f"across {p.n} seeds" if c.across is not None else f"over {p.n} test tasks"
    return [pair.a.label, pair.b.label, ", ".join(str(s) for s in c.per_seed),
            amount(metric, p.mean_a, False), amount(metric, p.mean_b, False),
            f"{amount(metric, p.diff)} ({interval(metric, p)}; {scope})", format_p(p.p_t), format_p(p.p_wilcoxon),
            compare_verdict(c, p)]


def _forest(metric: str, pairs: Sequence[Pair]) -> str:
    scale = 100.0 if metric == "accuracy" else 1.0
    rows = []
    for pair in pairs:
        c = pair.comparison
        p = c.overall
        scope = f"across {p.n} seeds" if c.across is not None else f"{p.n} tasks"
        rows.append(svg.Interval(f"{pair.a.label}\n− {pair.b.label} ({scope})", scale * p.diff, scale * p.low,
                                 scale * p.high, True))
        if c.across is not None:
            rows += [svg.Interval(f"seed {s} ({q.n} tasks)", scale * q.diff, scale * q.low, scale * q.high, False)
                     for s, q in c.per_seed.items()]
    unit = " (percentage points)" if metric == "accuracy" else ""
    better = "higher" if pairs[0].comparison.higher_is_better else "lower"
    title = f"A − B in {metric}{unit}, 95% CI; {better} is better"
    figure = svg.forest(rows, f"A − B, {metric}{unit}", f"forest-{metric}", title)
    return (f"<figure>{figure}<figcaption>{esc(title)}. Bold: each pair's verdict; grey: each seed's difference "
            "over the test tasks. A CI that crosses the dashed line is no significant difference.</figcaption>"
            "</figure>")


def _curves(rep: Report) -> Section | None:
    figures = [_figure(svg.panels(curve_panels(a), f"curves-{i}", a.label), _caption(a))
               for i, a in enumerate(rep.arms) if has_curves(a)]
    if not figures:
        return None
    return _section("curves", "Learning curves", _p(
        "From each run's metrics.csv: the training query loss after adaptation, and the validation mean ± 95% CI, "
        "one panel pair per method and settings, its seeds overlaid.", "muted"), *figures)


def _weights(rep: Report) -> Section | None:
    figures = [_figure(svg.panels(weight_panels(a), f"weights-{i}", a.label, width=13.0), _caption(a))
               for i, a in enumerate(rep.arms) if has_weights(a)]
    if not figures:
        return None
    return _section("weights", "Task weights", _p(
        "The task weights of a weighted meta-batch (gradient agreement: Σ|w| = 1, a negative weight is a task whose "
        "gradient disagrees with the batch's) over training, from metrics.csv.", "muted"), *figures)


def _caption(arm: Arm) -> str:
    logged = [r for r in arm.runs if not r.metrics.empty]
    return f"{arm.label}: {len(logged)} run(s), " + ", ".join(run_name(r) for r in logged) + "."


def _figure(svg_text: str, caption: str) -> str:
    return f"<figure>{svg_text}<figcaption>{esc(caption)}</figcaption></figure>"


def _differences(rep: Report) -> Section | None:
    if len(rep.runs) < 2:
        return None
    diffs = differences([r.settings for r in rep.runs])
    if not diffs:
        return _section("differences", "What differs", _p("The runs' settings are the same; only their folders "
                                                          "differ."))
    keys = list(diffs)[:12]
    rows = [[run.label, *(show(diffs[k][i]) for k in keys)] for i, run in enumerate(rep.runs)]
    more = f" (the first {len(keys)} of {len(diffs)} shown; each run's config is below)" if len(diffs) > 12 else ""
    return _section("differences", "What differs", _p(f"The runs differ in {describe(diffs, limit=8)}{more}. "
                                                      "Settings that cannot change a test score (folders, logging, "
                                                      "devices) are left out."),
                    table(["run", *keys], rows, ident="differences-table"))


def _runs(rep: Report) -> Section | None:
    return _section("runs", "Runs", *(_run_card(i, run) for i, run in enumerate(rep.runs)))


def _run_card(i: int, run: Run) -> str:
    r = run.record
    status = f' <span class="status-{esc(run.status)}">({esc(run.status)})</span>' if run.status != "finished" else ""
    items = [("folder", f"<code>{esc(run.folder.absolute())}</code>"), ("result", esc(_result(run)))]
    if r.get("error"):
        items.append(("error", esc(r["error"])))
    env = ", ".join(f"{k} {r[k]}" for k in ("metarun", "torch", "device") if k in r)
    extra = ", ".join(f"{label}{r[k]}{unit}" for k, label, unit in (
        ("exec_mode", "exec.mode ", ""), ("world_size", "processes: ", ""), ("seconds", "", " s")) if k in r)
    items.append(("environment", esc(env + (f" ({extra})" if extra else "")) if env else
                  '<span class="muted">not recorded (the run wrote no results.json)</span>'))
    if run.overrides:
        items.append(("overrides", f"<code>{esc(' '.join(run.overrides))}</code>"))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return (f'<article class="run" id="run-{i}">\n<h3>{esc(run.label)}{status}</h3>\n<dl>{rows}</dl>\n'
            f"{_config(run)}\n</article>")


def _result(run: Run) -> str:
    r = run.record
    if run.status != "finished":
        return run.status
    tasks = f" over {r['n_tasks']} test tasks" if "n_tasks" in r else ""
    return f"{cell(r)} ({r['metric']}{tasks})"


def _config(run: Run) -> str:
    if run.config is not None:
        return f"<details><summary>config (.hydra/config.yaml)</summary><pre>{esc(run.config)}</pre></details>"
    recorded = {k: v for k, v in run.record.items() if k not in ("run_dir", "status")}
    return ("<details><summary>settings recorded in results.json (no .hydra/config.yaml)</summary>"
            f"<pre>{esc(json.dumps(recorded, indent=2, default=str))}</pre></details>")
