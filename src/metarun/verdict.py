"""The reproduction verdict: one row per published cell, ours beside the paper's, with the test named.

- One run per cell: a two-sample z-test of our mean ± CI (over test tasks) against the published
  mean ± CI, |Δ| ≤ 1.96 · √(se_ours² + se_published²) with se = half-width / 1.96. Where the paper
  prints no CI, no verdict is given ("no published CI").
- Several seeds per cell (`--seeds`): whether the published number lies inside the t-based 95% CI of
  our seed means (a one-sample t-test), with each seed's own CI beside it.

The column names say which test was run. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from metarun.seeds import pm
from metarun.stats import format_p, one_sample_t, t_interval, two_sample_z

OURS = "ours (mean ± 95% CI over test tasks)"
P_Z = "p (two-sample z)"
VERDICT_Z = "consistent at 95%? (two-sample z)"
TASK_COLUMNS = ["cell", OURS, "test tasks", "published", "difference", P_Z, VERDICT_Z]

OURS_SEEDS = "ours (mean over seeds ± 95% t-CI)"
PER_SEED = "per seed (mean ± 95% CI over test tasks)"
P_T = "p (one-sample t across seeds)"
VERDICT_T = "published inside our across-seed 95% CI?"
SEED_COLUMNS = ["cell", OURS_SEEDS, "seeds", PER_SEED, "published", "difference", P_T, VERDICT_T]

YES_NO = {True: "yes", False: "no"}


def _scale(metric: str) -> tuple[float, int]:
    return (100.0, 2) if metric == "accuracy" else (1.0, 3)


def published_text(metric: str, published: float, half: float | None) -> str:
    _, digits = _scale(metric)
    if half is None or math.isnan(half):
        return f"{published:.{digits}f}"
    return f"{published:.{digits}f} ± {half:.{digits}f}"


def _finished(run: Mapping[str, Any] | None) -> bool:
    return run is not None and run.get("status", "finished") == "finished"


def task_row(cell: str, metric: str, run: Mapping[str, Any] | None, published: float,
             published_half: float | None) -> dict[str, Any]:
    """One cell with one run: ours over its test tasks against the published number (published in percent
    for accuracy, as the papers print it; results.json holds fractions)."""
    row = {"cell": cell, "published": published_text(metric, published, published_half)}
    if not _finished(run):
        return row | {OURS: "missing" if run is None else run["status"], "test tasks": "", "difference": "",
                      P_Z: "", VERDICT_Z: ""}
    scale, digits = _scale(metric)
    mean, half = scale * float(run["mean"]), scale * float(run["ci95"])
    test = two_sample_z(mean, half, published, published_half)
    return row | {OURS: f"{mean:.{digits}f} ± {half:.{digits}f}", "test tasks": int(run["n_tasks"]),
                  "difference": f"{mean - published:+.{digits}f}", P_Z: format_p(test.p),
                  VERDICT_Z: test.text if test.agrees is None else YES_NO[test.agrees]}


def seed_row(cell: str, metric: str, runs: Sequence[Mapping[str, Any]], seeds: Sequence[int],
             published: float) -> dict[str, Any]:
    """One cell over training seeds: the published number against the t-based CI of our seed means."""
    row = {"cell": cell, "published": published_text(metric, published, None)}
    by_seed = {int(r["seed"]): r for r in runs}
    done = [by_seed[s] for s in seeds if _finished(by_seed.get(s))]
    others = [f"seed {s} {by_seed[s]['status'] if s in by_seed else 'missing'}" for s in seeds
              if not _finished(by_seed.get(s))]
    count = f"{len(done)}" if not others else f"{len(done)} of {len(seeds)} ({', '.join(others)})"
    if not done:
        return row | {OURS_SEEDS: "missing", "seeds": count, PER_SEED: "", "difference": "", P_T: "",
                      VERDICT_T: ""}
    scale, digits = _scale(metric)
    means = [scale * float(r["mean"]) for r in done]
    mean, half, n = t_interval(means)
    test = one_sample_t(means, published)
    ours = f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if n > 1 else "")
    per_seed = "; ".join(f"seed {r['seed']}: {pm(metric, float(r['mean']), float(r['ci95']))}" for r in done)
    return row | {OURS_SEEDS: ours, "seeds": count, PER_SEED: per_seed, "difference": f"{mean - published:+.{digits}f}",
                  P_T: format_p(test.p), VERDICT_T: test.text if test.agrees is None else YES_NO[test.agrees]}
