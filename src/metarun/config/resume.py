"""How two configs of a run differ, and which differences forbid continuing a stopped run."""

from __future__ import annotations

from typing import Any

from metarun.config.keys import differences, lookup

# A preset's `paper` block describes its source table (published numbers, what its ± is, notes, assumptions): it
# changes nothing a run computes, so a run made before that text was edited is still the same run.
DESCRIPTIVE = "paper"


def run_differences(saved: Any, config: Any) -> list[str]:
    """`differences` between what two configs compute: the preset's description left out."""
    return [k for k in differences(saved, config) if k != DESCRIPTIVE and not k.startswith(f"{DESCRIPTIVE}.")]


# How the tasks are executed, not what is computed (the modes give the same gradients, tests/test_execution.py):
# a stopped run may continue with other values, e.g. a smaller `exec.chunk` after running out of GPU memory.
EXECUTION_ONLY = {"exec.mode", "exec.chunk", "exec.workers", "exec.backend", "exec.timeout"}
# Settings added since runs were first recorded, with the value that older runs had in effect.
ADDED = {"exec.tf32": False, "exec.autocast": "none", "inner.sub_batches": 1, "outer.decay": 1.0,
         "outer.decay_every": 0, "outer.clip_value": 0.0, "model.activation": "relu", "algo.inner_state": "fresh",
         "outer.cosine": False, "outer.lr_min": 0.0, "algo.msl_epochs": 0, "algo.lslr": False, "algo.bnwb": False,
         "algo.first_order_epochs": 0, "algo.epoch_iterations": 500, "exec.backend": "auto", "exec.timeout": 300.0,
         "eval.select": "last"}
# Weightings became objects (`weighting._target_`, given by weighting.name); uniform weighting has no
# `weighting.vectors` since, which older runs carried without using it.
WEIGHTING_OBJECTS = {"weighting._target_"}


def _dropped(saved: dict, config: dict) -> set[str]:
    """Keys older runs carried that say nothing about what they computed."""
    keys = {k for k in WEIGHTING_OBJECTS if lookup(saved, k) is None}
    if lookup(saved, "weighting.name") == "uniform" and lookup(config, "weighting.vectors") is None:
        keys.add("weighting.vectors")
    return keys



def continuing_differences(saved: dict, config: dict) -> list[str]:
    """The keys in which `config` differs from a stopped run's `saved` one in a way that forbids continuing it:
    execution-only settings may change, and a setting the old run predates counts as at its old value."""
    added = {k for k, old in ADDED.items() if lookup(saved, k) is None and lookup(config, k) == old}
    return sorted(set(run_differences(saved, config)) - EXECUTION_ONLY - added - _dropped(saved, config))


def describe_differences(before: dict, now: dict, keys: list[str], limit: int = 5) -> str:
    """`train.iterations: 3 there, 4 now; ...` for the first `limit` keys."""
    shown = "; ".join(f"{k}: {_shown(lookup(before, k))} there, {_shown(lookup(now, k))} now" for k in keys[:limit])
    return shown + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict) and "_target_" in value:
        return str(value["_target_"])
    return str(value).replace(" ", "")
