"""The reproduction verdict: one row per published cell, ours beside the paper's, with the test named.

What a published ± is decides what it can be compared with (`paper.pm` in a preset, per cell where a table
copies rows from several papers):
- `ci95_tasks`, a 95% CI over test tasks: a two-sample z-test, |Δ| ≤ 1.96 · √(se_ours² + se_published²) with
  se_published = ± / 1.96 and se_ours = our half-width / t(0.975, n − 1);
- `std_runs`, a standard deviation over training runs: our run is compared with the published mean as one
  more run would be, se_published = the std;
- `unknown` (or no ± printed): the published mean is taken as a point; only our own error counts.

Several seeds per cell (`--seeds`): all seeds are scored on the same test tasks, so the spread of their means
leaves out the test set's own sampling error, shared by every seed. The verdict adds it back:
z = (mean over seeds − published) / √(sd²/n + se_test² + se_published²), where sd is the seeds' standard
deviation, n their number and se_test the seeds' mean standard error over test tasks.

The column names say which test was run. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from metarun.report.results import no_ci, pm
from metarun.report.stats import Z95, format_p, t_interval, t_quantile, z_verdict

OURS = "ours (mean ± 95% CI over test tasks)"
PM = "published ± is"
P_Z = "p (z)"
VERDICT_Z = "consistent at 95%? (z)"
TASK_COLUMNS = ["cell", OURS, "test tasks", "published", PM, "difference", P_Z, VERDICT_Z]

OURS_SEEDS = "ours (mean over seeds ± 95% t-CI)"
PER_SEED = "per seed (mean ± 95% CI over test tasks)"
P_T = "p (z: seeds, test tasks, published)"
VERDICT_T = "consistent at 95%? (seeds + test-set + published error)"
SEED_COLUMNS = ["cell", OURS_SEEDS, "seeds", PER_SEED, "published", PM, "difference", P_T, VERDICT_T]

PM_KINDS = {
    "ci95_tasks": "a 95% CI over test tasks",
    "std_runs": "a std over training runs (compared as one more run)",
    "unknown": "of unknown kind (not used: the published mean is taken as a point)",
}
NO_PM = "not printed (the published mean is taken as a point)"

YES_NO = {True: "yes", False: "no"}


def _scale(metric: str) -> tuple[float, int]:
    return (100.0, 2) if metric == "accuracy" else (1.0, 3)


def published_text(metric: str, published: float, half: float | None) -> str:
    _, digits = _scale(metric)
    if no_ci(half):
        return f"{published:.{digits}f}"
    return f"{published:.{digits}f} ± {half:.{digits}f}"


def _finished(run: Mapping[str, Any] | None) -> bool:
    return run is not None and run.get("status", "finished") == "finished"


def _check_kind(kind: str) -> None:
    if kind not in PM_KINDS:
        raise ValueError(f"a published ± is one of {', '.join(PM_KINDS)}, not {kind!r}")


def published_se(half: float | None, kind: str) -> float:
    """The standard error that a published ± contributes to a comparison (0 where it cannot be used)."""
    _check_kind(kind)
    if no_ci(half) or kind == "unknown":
        return 0.0
    return half / Z95 if kind == "ci95_tasks" else half


def _pm_text(half: float | None, kind: str) -> str:
    _check_kind(kind)
    return NO_PM if no_ci(half) else PM_KINDS[kind]


def task_se(run: Mapping[str, Any], scale: float = 1.0) -> float:
    """The standard error of a run's mean over its test tasks, from its recorded 95% half-width."""
    n, half = int(run["n_tasks"]), run.get("ci95")
    if n < 2 or no_ci(half):
        return math.nan
    half = scale * float(half)
    # results.json before `ci95_method` used the normal quantile.
    return half / (t_quantile(n - 1) if run.get("ci95_method") == "t" else Z95)


def task_row(cell: str, metric: str, run: Mapping[str, Any] | None, published: float,
             published_half: float | None, kind: str = "ci95_tasks") -> dict[str, Any]:
    """One cell with one run: ours over its test tasks against the published number (published in percent
    for accuracy, as the papers print it; results.json holds fractions)."""
    row = {"cell": cell, "published": published_text(metric, published, published_half),
           PM: _pm_text(published_half, kind)}
    if not _finished(run):
        return row | {OURS: "missing" if run is None else run["status"], "test tasks": "", "difference": "",
                      P_Z: "", VERDICT_Z: ""}
    scale, digits = _scale(metric)
    mean = scale * float(run["mean"])
    se = task_se(run, scale)
    if math.isnan(se):
        return row | {OURS: f"{mean:.{digits}f} (1 task: no CI)", "test tasks": int(run["n_tasks"]),
                      "difference": f"{mean - published:+.{digits}f}", P_Z: "", VERDICT_Z: "no CI to test with"}
    test = z_verdict(mean - published, (se, published_se(published_half, kind)))
    return row | {OURS: f"{mean:.{digits}f} ± {scale * float(run['ci95']):.{digits}f}",
                  "test tasks": int(run["n_tasks"]), "difference": f"{mean - published:+.{digits}f}",
                  P_Z: format_p(test.p), VERDICT_Z: YES_NO[bool(test.agrees)]}


def seed_row(cell: str, metric: str, runs: Sequence[Mapping[str, Any]], seeds: Sequence[int],
             published: float, published_half: float | None = None, kind: str = "ci95_tasks") -> dict[str, Any]:
    """One cell over training seeds: the mean over seeds against the published number, with the seeds' spread,
    the shared test set's error and the published error (module docstring)."""
    row = {"cell": cell, "published": published_text(metric, published, published_half),
           PM: _pm_text(published_half, kind)}
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
    seed_se = 0.0 if n < 2 else half / t_quantile(n - 1) if half else 0.0
    test_ses = [task_se(r, scale) for r in done]
    test = z_verdict(mean - published, (seed_se, math.fsum(test_ses) / len(test_ses),
                                        published_se(published_half, kind)))
    ours = f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if n > 1 else " (1 seed: no CI across seeds)")
    per_seed = "; ".join(f"seed {r['seed']}: {pm(metric, float(r['mean']), r.get('ci95'))}" for r in done)
    verdict = "" if any(math.isnan(s) for s in test_ses) else YES_NO[bool(test.agrees)]
    return row | {OURS_SEEDS: ours, "seeds": count, PER_SEED: per_seed, "difference": f"{mean - published:+.{digits}f}",
                  P_T: format_p(test.p) if verdict else "", VERDICT_T: verdict or "no CI over test tasks"}
