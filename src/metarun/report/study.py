"""A paired study over a sweep: for every setting, one choice of a factor against another across seeds.

`paired_study(SWEEP, "weighting", "agreement", "uniform")` groups the sweep's runs by their overrides
(`.hydra/overrides.yaml`) other than the seed and the factor, pairs seed with seed inside each group,
and compares each pair on their shared test tasks (metarun.report.compare): a row per setting with the mean
difference A − B across seeds, its t-based 95% CI and the paired t-test's p-value. The settings of one
study are one family of tests: the verdict words come from Holm-adjusted p-values over the family (5%),
printed beside the raw ones. Runs that did not finish are named in their row, never dropped. No torch here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from metarun.report.compare import CompareError, compare, load_run
from metarun.report.results import FAILED, RESULTS, find_jobs
from metarun.report.settings import matches
from metarun.report.stats import format_p, holm

SKIPPED_KEYS = ("seed", "hydra.", "+")  # overrides that are not part of a setting's name
P_RAW = "p (paired t across seeds)"
P_HOLM = "p, Holm-adjusted over the study's settings"
ALPHA = 0.05  # for each setting after Holm's adjustment: the family-wise error rate of the study


def _overrides(job: Path) -> list[str]:
    path = job / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def _label(overrides: list[str], factor: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key == factor or key.startswith(SKIPPED_KEYS):
            continue
        out.append((key, value))
    return tuple(sorted(out))


def _order(item: tuple) -> tuple:
    """Rows in the order of their settings, numbers as numbers (meta-batch 5 before 25)."""
    def value(v: str) -> tuple:
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)

    return tuple((k, value(v)) for k, v in item[0])


def _why(job: Path) -> str:
    if (job / FAILED).is_file():
        error = json.loads((job / FAILED).read_text()).get("error", "")
        return "failed" + (f": {error.split(':')[0]}" if error else "")
    return "missing"


def paired_study(folder: Path, factor: str, a: str, b: str) -> pd.DataFrame:
    """A row per setting: means of A and B over seeds, A − B across seeds with its 95% CI, and each seed's pair."""
    groups: dict[tuple, dict[str, list]] = {}
    for job in find_jobs([folder]):
        overrides = _overrides(job)
        seed = next((o.partition("=")[2] for o in overrides if o.startswith("seed=")), "?")
        entry = groups.setdefault(_label(overrides, factor), {"a": [], "b": [], "unfinished": []})
        side = "a" if f"{factor}={a}" in overrides else "b" if f"{factor}={b}" in overrides else None
        if not (job / RESULTS).is_file():
            which = {"a": a, "b": b}.get(side or "", job.name)
            entry["unfinished"].append(f"seed {seed} {which}: {_why(job)}")
            continue
        run = load_run(job)
        side = side or ("a" if matches(run.settings, factor, a) else "b" if matches(run.settings, factor, b) else None)
        if side is not None:
            entry[side].append(run)
    rows = [_row(dict(label), entry, factor, a, b) for label, entry in sorted(groups.items(), key=_order)]
    _holm_verdicts(rows, a)
    table = pd.DataFrame(rows)
    # Overrides every row shares (a budget given on the command line) are said once, not in a column each.
    keys = {k for label in groups for k, _ in label}
    common = {k: table[k].iloc[0] for k in sorted(keys) if table[k].nunique(dropna=False) == 1 and len(table) > 1}
    table = table.drop(columns=list(common))
    table.attrs["common"] = common
    return table


def _row(label: dict[str, str], entry: dict[str, list], factor: str, a: str, b: str) -> dict[str, object]:
    runs_a, runs_b = entry["a"], entry["b"]
    row: dict[str, object] = dict(label)
    diff_col = f"{a} − {b} (mean ± 95% CI across seeds)"
    if not runs_a or not runs_b:
        return row | {"paired seeds": 0, diff_col: "—", "verdict": "no pair",
                      "left out": "; ".join(entry["unfinished"]) or f"no finished {a if not runs_a else b} run"}
    try:
        c = compare(runs_a, runs_b)
    except CompareError as e:
        return row | {"paired seeds": 0, diff_col: "—", "verdict": f"not comparable: {e}"}
    p, metric = c.overall, c.metric
    scale = 100.0 if metric == "accuracy" else 1.0
    digits = 2 if metric == "accuracy" else 4
    fmt = f"{{:+.{digits}f}}"
    seeds = len(c.per_seed)
    per_seed = "; ".join(f"seed {s}: {fmt.format(scale * q.diff)} (p {format_p(q.p_t)})" for s, q in c.per_seed.items())
    across = fmt.format(scale * p.diff) + ("" if math.isnan(p.half) else f" ± {scale * p.half:.{digits}f}")
    if seeds == 1:
        across += " (1 seed: the CI is over test tasks, not seeds)"
    p_raw = p.p_t
    return row | {
        "_p": p_raw, "_higher": (p.diff > 0) == c.higher_is_better,
        "paired seeds": seeds,
        f"{b} ({metric}, mean over seeds)": f"{scale * _mean(c.per_seed, 'mean_b'):.4g}",
        f"{a} ({metric}, mean over seeds)": f"{scale * _mean(c.per_seed, 'mean_a'):.4g}",
        diff_col: across,
        P_RAW: format_p(p_raw) + ("" if seeds > 1 else " (over test tasks: 1 seed)"),
        "per seed: difference over the same test tasks (paired t p)": per_seed,
        "verdict": "",  # from the Holm-adjusted p over the study's settings (_holm_verdicts)
        "left out": "; ".join(entry["unfinished"] + [u.replace(" A", f" {a}").replace(" B", f" {b}")
                                                     for u in c.unpaired]),
    }


def _mean(per_seed: dict, field: str) -> float:
    values = [getattr(p, field) for p in per_seed.values()]
    return sum(values) / len(values)


def _holm_verdicts(rows: list[dict[str, object]], a: str) -> None:
    """The study's settings are one family: Holm's adjustment over every row that has a p-value, and the verdict
    words from the adjusted p at 5%."""
    raw = [float(r.pop("_p", math.nan)) for r in rows]  # type: ignore[arg-type]
    adjusted = holm(raw)
    family = sum(not math.isnan(p) for p in raw)
    for row, p in zip(rows, adjusted, strict=True):
        higher = row.pop("_higher", None)
        if math.isnan(p):
            row.setdefault(P_HOLM, "")
            continue
        row[P_HOLM] = f"{format_p(p)} (of {family})"
        row["verdict"] = "no clear difference" if p > ALPHA else f"{a} {'better' if higher else 'worse'}"


def summary(table: pd.DataFrame, a: str) -> str:
    """One line: in how many settings A was better, worse, or not clearly different."""
    counts = table["verdict"].value_counts()
    better, worse = counts.get(f"{a} better", 0), counts.get(f"{a} worse", 0)
    same = counts.get("no clear difference", 0)
    other = len(table) - better - worse - same
    text = (f"{len(table)} settings: {a} better in {better}, worse in {worse}, no clear difference in {same} "
            f"(Holm-adjusted p ≤ {ALPHA} over the study's {len(table)} settings, paired t across seeds)")
    return text + (f"; {other} without a verdict (see 'left out')" if other else "")
