"""`metarun-compare RUN_A RUN_B`: two methods compared task by task on the same test tasks.

Every run scores the same fixed test stream (`eval.seed`), and scores.csv keeps each task's score,
so A − B is computed pair by pair: the mean difference with its paired 95% CI and p-value (paired
t), and the Wilcoxon signed-rank p-value beside it. Runs whose test streams differ are refused,
naming the difference. A side may hold several runs that differ only in `seed` (a sweep over
seeds): then seed is paired with seed, each pair is compared over its test tasks, and the seeds'
mean differences are compared across seeds (paired t with n − 1 degrees of freedom). No torch here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarun import messages
from metarun.report import record as record_fields
from metarun.report.results import RESULTS, SCORES, find_jobs, read_results
from metarun.report.runs import Run
from metarun.report.settings import describe, differences, matches, show
from metarun.report.stats import Paired, p_is, paired

# What fixes a run's test tasks: results.json fields (named by the setting a user changes), then config keys
# read from .hydra/config.yaml.
STREAM_SETTINGS = ("eval.chunk", "data.split_dir")


class CompareError(ValueError):
    """Runs that cannot be compared task by task; the message names them and the fix."""


@dataclass
class Comparison:
    """A − B: per seed over the paired test tasks, and across the paired seeds when there are several."""

    a: list[Run]
    b: list[Run]
    per_seed: dict[int, Paired]
    across: Paired | None
    unpaired: list[str] = field(default_factory=list)
    note: str = ""  # said beside the result (e.g. that A and B were trained with different seeds)

    @property
    def metric(self) -> str:
        return self.a[0].record["metric"]

    @property
    def higher_is_better(self) -> bool:
        return bool(self.a[0].record.get("higher_is_better", self.metric == "accuracy"))

    @property
    def overall(self) -> Paired:
        """Across seeds when several are paired; otherwise the one seed's comparison over test tasks."""
        return self.across if self.across is not None else next(iter(self.per_seed.values()))


def load_run(folder: Path) -> Run:
    """A finished run with its per-task scores; refused with the fix when it has none."""
    record = read_results(folder / RESULTS)
    if not (folder / record.get("scores_file", SCORES)).is_file():
        raise CompareError(messages.one_paragraph(
            f"{folder} has results.json but no {SCORES}, the per-task test scores a paired comparison needs. To "
            f"write it, delete {folder / RESULTS} and run the same command again in that folder: its checkpoint is "
            "evaluated again without training."))
    return Run(folder, record)


def scores(run: Run) -> list[float]:
    with open(run.folder / run.record.get("scores_file", SCORES), newline="") as f:
        values = [float(row["score"]) for row in csv.DictReader(f)]
    if len(values) != run.record["n_tasks"]:
        raise CompareError(f"{run.folder / SCORES} holds {len(values)} task scores, but its results.json says "
                           f"{run.record['n_tasks']} test tasks: the file was edited or cut short. Rerun that run.")
    return values


def load_side(folder: Path, where: Sequence[str], name: str) -> tuple[list[Run], list[str]]:
    """The finished runs under `folder` that match every KEY=VALUE of `where`, and notes on the others."""
    if not folder.is_dir():
        raise CompareError(f"{name}: no such folder: {folder}. Pass a run folder that metarun wrote.")
    jobs = find_jobs([folder])
    chosen, notes = [], []
    for job in jobs:
        if not (job / RESULTS).is_file():
            notes.append(f"{job} has not finished (no results.json): left out")
            continue
        run = load_run(job)
        if all(matches(run.settings, *_split(w)) for w in where):
            chosen.append(run)
    if not chosen:
        picked = f" matching {' '.join(where)}" if where else ""
        raise CompareError(messages.one_paragraph(
            f"{name}: no finished run{picked} under {folder}. Pass the folder of a finished run (it holds "
            "results.json and scores.csv)" + (", or check the --a/--b selection" if where else "") + "."))
    check_one_method(folder, chosen, name)
    return chosen, notes


def _split(where: str) -> tuple[str, str]:
    key, sep, value = where.partition("=")
    if not sep or not key:
        raise CompareError(f"`{where}` is not a selection: write KEY=VALUE, e.g. `weighting=agreement`.")
    return key, value


def check_one_method(folder: Path, runs: list[Run], name: str) -> None:
    """A side is one run, or runs that differ only in their seed (one per seed)."""
    diffs = differences([r.settings for r in runs], ignore={"seed"})
    if diffs:
        first = next(iter(diffs))
        example = f"{first}={show(diffs[first][0])}"
        raise CompareError(messages.one_paragraph(
            f"{name}: {folder} is a multirun folder of {len(runs)} runs that differ in {describe(diffs)}, not only "
            f"in seed, so it is not one method to compare. Pass one run folder (e.g. {runs[0].folder}), or choose "
            f"the runs with --{name.lower()} KEY=VALUE (e.g. --{name.lower()} {example})."))
    seen: dict[int, Path] = {}
    for run in runs:
        if run.seed in seen:
            raise CompareError(messages.one_paragraph(
                f"{name}: {seen[run.seed]} and {run.folder} are two runs of the same settings and seed {run.seed}: "
                "repeats, not seeds to pair. Pass only one of them."))
        seen[run.seed] = run.folder


def stream(run: Run) -> dict[str, Any]:
    """The settings that fix the run's test tasks, by the names a user sets them with."""
    fields = [f for f in record_fields.FIELDS if f.kind == "stream" and f.name in run.record]
    out = {(f.config_key or f.name): run.record[f.name] for f in fields}
    out |= {k: run.settings[k] for k in STREAM_SETTINGS if k in run.settings}
    return out


def check_same_stream(a: Run, b: Run) -> None:
    sa, sb = stream(a), stream(b)
    diffs = {k: (sa.get(k), sb.get(k)) for k in sorted(sa.keys() | sb.keys()) if sa.get(k) != sb.get(k)}
    if diffs:
        said = ", ".join(f"{k} ({x} vs {y})" for k, (x, y) in diffs.items())
        raise CompareError(messages.one_paragraph(
            f"{a.folder} and {b.folder} were tested on different test tasks: they differ in {said}. A paired "
            "comparison needs the same test stream: run both with the same data, ways, shots, queries, eval.seed, "
            "eval.tasks and eval.chunk (metarun-table compares runs tested on different tasks, unpaired)."))


def grid(run: Run) -> int | None:
    """Answers per test task where the metric is accuracy (ways × queries): every per-task score is a multiple
    of 1/grid, so differences are formed as counts and ties stay ties (metarun.report.stats.paired)."""
    if run.record["metric"] != "accuracy" or run.record.get("task_kind") == "regression":
        return None
    return int(run.record["ways"]) * int(run.record["queries"])


def _pair(run: Run, other: Run) -> Paired:
    check_same_stream(run, other)
    if run.record["metric"] != other.record["metric"]:
        raise CompareError(f"{run.folder} scores {run.record['metric']}, {other.folder} "
                           f"{other.record['metric']}: they cannot be compared.")
    try:
        return paired(scores(run), scores(other), grid(run))
    except ValueError as e:  # accuracies that are not k / (ways × queries): not what metarun writes
        raise CompareError(messages.one_paragraph(
            f"{run.folder} and {other.folder}: {e}, as their results.json's ways × queries say each test task "
            "has. scores.csv was edited, or written by another program: rerun the runs to compare them.")) from None


def compare(a: list[Run], b: list[Run]) -> Comparison:
    """A − B, seed paired with seed; each pair over its (identical) test tasks. Two single runs trained with
    different seeds are paired over their test tasks too (the difference then holds seed-to-seed variation)."""
    by_seed_b = {r.seed: r for r in b}
    per_seed, unpaired = {}, []
    if len(a) == 1 and len(b) == 1 and a[0].seed != b[0].seed:
        per_seed[a[0].seed] = _pair(a[0], b[0])
        note = (f"A was trained with seed {a[0].seed}, B with seed {b[0].seed}: paired over their shared test tasks, "
                "the difference holds seed-to-seed variation as well as the methods' (compare one seed each, or "
                "several seeds per side, to separate them)")
        return Comparison(a, b, per_seed, None, [], note)
    for run in sorted(a, key=lambda r: r.seed):
        other = by_seed_b.get(run.seed)
        if other is None:
            unpaired.append(f"seed {run.seed} only in A")
            continue
        per_seed[run.seed] = _pair(run, other)
    unpaired += [f"seed {s} only in B" for s in sorted(set(by_seed_b) - {r.seed for r in a})]
    if not per_seed:
        raise CompareError(f"A has seeds {sorted(r.seed for r in a)} and B seeds {sorted(by_seed_b)}: no seed in "
                           "common to pair. Compare runs trained with the same seeds, or one run against one run.")
    across = None
    if len(per_seed) > 1:
        # A seed's mean accuracy is a multiple of 1/(answers per task × test tasks): counts again.
        answers = grid(a[0])
        per_run = answers * int(a[0].record["n_tasks"]) if answers else None
        across = paired([p.mean_a for p in per_seed.values()], [p.mean_b for p in per_seed.values()], per_run)
    return Comparison(a, b, per_seed, across, unpaired)


def amount(metric: str, value: float, signed: bool = True) -> str:
    """A difference in the metric's printed unit: percentage points for accuracy."""
    if metric == "accuracy":
        return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def interval(metric: str, p: Paired) -> str:
    if math.isnan(p.half):
        return "no CI"
    return f"95% CI {amount(metric, p.low)} to {amount(metric, p.high)}"


def verdict(c: Comparison, p: Paired) -> str:
    if math.isnan(p.half) or p.low <= 0 <= p.high:
        return "no significant difference at the 5% level (the 95% CI includes 0)"
    a_higher = p.diff > 0
    better = a_higher == c.higher_is_better
    higher = "higher" if a_higher else "lower"
    return f"A is {'better' if better else 'worse'} ({higher} {c.metric}; the 95% CI excludes 0)"


def report(c: Comparison) -> str:
    unit = " (percentage points)" if c.metric == "accuracy" else ""
    direction = "higher" if c.higher_is_better else "lower"
    a0, b0 = c.a[0], c.b[0]
    diffs = differences([a0.settings, b0.settings], ignore={"seed"})
    s = stream(a0)
    shape = f"{s.get('ways')}-way " if a0.record.get("task_kind") != "regression" else ""
    queries = f"{s.get('queries')} quer{'y' if s.get('queries') == 1 else 'ies'}"
    tasks = (f"{s.get('data.name')} {shape}{s.get('shots')}-shot, {queries}, "
             f"eval.seed {s.get('eval.seed')}, {s.get('eval.tasks')} tasks")
    lines = [
        f"A: {_side(c.a)}",
        f"B: {_side(c.b)}",
        f"A and B differ in: {describe(diffs, limit=8) if diffs else 'nothing but their folders'}",
        f"test tasks: {tasks}, the same for every pair",
        f"metric: {c.metric}, {direction} is better; differences are A − B{unit}",
    ]
    for seed, p in c.per_seed.items():
        which = f"seed {seed}" if not c.note else f"seeds {c.a[0].seed} (A) and {c.b[0].seed} (B)"
        lines.append(f"{which}: A {amount(c.metric, p.mean_a, False)}, B {amount(c.metric, p.mean_b, False)}, "
                     f"A − B = {amount(c.metric, p.diff)} ({interval(c.metric, p)}; paired t over {p.n} tasks: "
                     f"t = {p.t:.3g}, {p_is(p.p_t)}; Wilcoxon signed-rank {p_is(p.p_wilcoxon)}, "
                     f"{p.nonzero} tasks differ, {p.wilcoxon_method})")
    if c.across is not None:
        p = c.across
        lines.append(f"across {p.n} seeds (each seed's mean, seed paired with seed): A − B = "
                     f"{amount(c.metric, p.diff)} ({interval(c.metric, p)}; paired t, {p.n - 1} degrees of freedom: "
                     f"t = {p.t:.3g}, {p_is(p.p_t)}; Wilcoxon signed-rank {p_is(p.p_wilcoxon)})")
    lines += [f"left out: {note}" for note in c.unpaired]
    if c.note:
        lines.append(f"note: {c.note}")
    scope = f"across {c.across.n} seeds" if c.across is not None else f"over {c.overall.n} test tasks, one seed"
    lines.append(f"verdict ({scope}): {verdict(c, c.overall)}")
    return "\n".join(lines)


def _side(runs: list[Run]) -> str:
    seeds = ", ".join(str(r.seed) for r in sorted(runs, key=lambda r: r.seed))
    where = runs[0].folder if len(runs) == 1 else f"{len(runs)} runs under {Path(*_common(runs))}"
    return f"{runs[0].method}, seed{'s' if len(runs) > 1 else ''} {seeds} ({where})"


def _common(runs: list[Run]) -> tuple[str, ...]:
    parts = [r.folder.parts for r in runs]
    common = []
    for items in zip(*parts, strict=False):
        if len(set(items)) > 1:
            break
        common.append(items[0])
    return tuple(common) or ("/",)
