"""A finished run's settings as one flat dict, and the settings in which runs differ.

Read from the config Hydra saved beside the run (`.hydra/config.yaml`), or, for a folder that has
only results.json, from the settings that file records. Settings that cannot change a run's test
scores (where files go, how often it logs or checkpoints, how tasks are batched) are left out, so
runs that differ only in those count as the same setting. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metarun.config.keys import dotted
from metarun.report.record import describes_the_run

# Keys (or key prefixes, ending in ".") that do not change what a run computes on its test tasks. Not
# `eval.chunk`: the test stream draws each chunk's tasks in turn, so another chunk size means other tasks.
IGNORED = ("device", "logger", "paper.", "exec.", "data.root", "data.cache_dir", "eval.val_tasks",
           "train.eval_every", "train.log_every", "train.checkpoint_every")


def _ignored(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in IGNORED)


def config_of(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A run's `.hydra/config.yaml` as flat dotted keys, as written and resolved (as written where an interpolation
    cannot resolve here, e.g. an unset variable); None where the folder has none."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    loaded = OmegaConf.load(path)
    written = dotted(OmegaConf.to_container(loaded, resolve=False))
    try:
        return written, dotted(OmegaConf.to_container(loaded, resolve=True))
    except Exception:  # whatever the resolver raises: compare as written
        return written, written


def run_settings(run_dir: Path, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's settings, flat (`inner.lr`, `weighting.name`, ...), without the ignored ones."""
    config = config_of(run_dir)
    if config is not None:
        flat = {k: tuple(v) if isinstance(v, list) else v for k, v in config[1].items()}
    else:
        flat = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (record or {}).items()
                if describes_the_run(k)}
    return {k: v for k, v in flat.items() if not _ignored(k)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def differences(settings: Iterable[Mapping[str, Any]], ignore: Iterable[str] = ()) -> dict[str, list[Any]]:
    """Each key whose value is not the same in every one of `settings`, with the values in order."""
    settings = list(settings)
    skip = set(ignore)
    keys = sorted({k for s in settings for k in s} - skip)
    out = {}
    for key in keys:
        values = [s.get(key) for s in settings]
        if any(not _same(v, values[0]) for v in values[1:]):
            out[key] = values
    return _by_group(out)


def _by_group(diffs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Runs of different config-group options (algo=maml vs algo=reptile) differ in every key of the group:
    name the group once, by its options, as on the command line."""
    groups = [k[: -len(".name")] for k in diffs if k.endswith(".name")]
    out = {g: diffs[f"{g}.name"] for g in groups}
    out |= {k: v for k, v in diffs.items() if not any(k.startswith(f"{g}.") for g in groups)}
    return out


def describe(diffs: Mapping[str, list[Any]], limit: int = 4) -> str:
    """`inner.lr (0.01, 0.02), eval.lr (0.01, 0.02)`: the differing keys and their distinct values."""
    parts = []
    for key, values in list(diffs.items())[:limit]:
        distinct = list(dict.fromkeys(show(v) for v in values))
        parts.append(f"{key} ({', '.join(distinct)})")
    more = len(diffs) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def show(value: Any) -> str:
    """A setting's value as written on a command line."""
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def matches(settings: Mapping[str, Any], key: str, wanted: str) -> bool:
    """Whether a run's setting `key` is `wanted` (as written on a command line); a group name means its `.name`."""
    if key not in settings and f"{key}.name" in settings:
        key = f"{key}.name"
    if key not in settings:
        return False
    value = settings[key]
    if show(value) == wanted or str(value).lower() == wanted.lower():
        return True
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return False
