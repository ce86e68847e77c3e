"""`metarun-table --seeds`: one row per setting, aggregated over runs that differ only in their training seed.

A cell of the default table is one trained model's mean ± CI over test tasks. Published "±" values
are often a spread across training runs instead, so here each row holds the mean over seeds, the
t-based 95% CI across seeds, the number of seeds, and each seed's own mean ± CI over test tasks.
Runs of one row that differ in anything but the seed are refused, never averaged. No torch here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from metarun import messages
from metarun.report.results import method_label, pm, setting_label
from metarun.report.settings import describe, differences, run_settings
from metarun.report.stats import t_interval

ACROSS = "mean ± 95% CI across seeds (t)"
PER_SEED = "per seed: mean ± 95% CI over test tasks"
COLUMNS = ["setting", "seeds", ACROSS, PER_SEED]


class SeedsError(ValueError):
    """Runs that cannot be aggregated over seeds; the message names them and the fix."""


def seed_table(runs: pd.DataFrame) -> pd.DataFrame:
    """A row per algorithm + weighting and setting: mean over seeds, t-based 95% CI across seeds, per-seed CIs."""
    runs = runs.reset_index(drop=True).copy()
    runs["method"] = runs.apply(method_label, axis=1)
    runs["setting"] = runs.apply(setting_label, axis=1)
    settings = [run_settings(Path(r["run_dir"]), r.to_dict()) for _, r in runs.iterrows()]
    rows = []
    for (method, setting), group in runs.groupby(["method", "setting"], sort=True):
        check_only_seeds(method, setting, group, [settings[i] for i in group.index])
        rows.append({"method": method, "setting": setting, **aggregate(group)})
    return pd.DataFrame(rows, columns=["method", *COLUMNS]).set_index("method")


def check_only_seeds(method: str, setting: str, group: pd.DataFrame, settings: list[dict]) -> None:
    diffs = differences(settings, ignore={"seed"})
    if diffs:
        raise SeedsError(messages.one_paragraph(
            f"`--seeds` averages runs that differ only in `seed`, but the {len(group)} runs of {method} on {setting} "
            f"also differ in {describe(diffs)}. Averaging them would mix settings. Leave out --seeds for a row per "
            "run, or tabulate one setting at a time (pass only the folders of the runs that share it)."))
    finished = group[group["status"].fillna("finished") == "finished"]
    repeated = finished["seed"][finished["seed"].duplicated()].unique().tolist()
    if repeated:
        folders = finished[finished["seed"] == repeated[0]]["run_dir"].tolist()
        raise SeedsError(messages.one_paragraph(
            f"`--seeds` needs one run per seed, but seed {repeated[0]} of {method} on {setting} has "
            f"{len(folders)} finished runs with the same settings ({', '.join(folders)}): they are repeats, not "
            "independent seeds. Pass only one of them."))


def aggregate(group: pd.DataFrame) -> dict[str, str]:
    """The seed columns of one row; failed or missing seeds are named, never dropped silently."""
    group = group.sort_values("seed")
    done = group[group["status"].fillna("finished") == "finished"]
    other = group[group["status"].fillna("finished") != "finished"]
    if done.empty:
        return {"seeds": f"0 of {len(group)} finished", ACROSS: "—", PER_SEED: _others(other)}
    metric = done["metric"].iloc[0]
    mean, half, n = t_interval(done["mean"].astype(float).tolist())
    seeds = f"{n}" if other.empty else f"{n} of {len(group)} ({_others(other)})"
    across = pm(metric, mean, half) + (" (1 seed: no across-seed CI)" if n == 1 else "")
    per_seed = "; ".join(f"seed {r['seed']}: {pm(metric, r['mean'], r['ci95'])}" for _, r in done.iterrows())
    return {"seeds": seeds, ACROSS: across, PER_SEED: per_seed}


def _others(other: pd.DataFrame) -> str:
    return ", ".join(f"seed {r['seed']} {r['status']}" for _, r in other.iterrows())
