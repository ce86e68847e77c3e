"""Nested configs read as dotted keys (`outer.optimizer._target_`): flattened, looked up and compared.

One flattener for every reader: the resume check, the report's settings and table rows, TensorBoard's
hyperparameters and the trackers' parameters all name a setting the way the command line does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys (`outer.optimizer._target_`); lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= dotted(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def lookup(config: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a nested dict, or None."""
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The dotted keys at which two resolved configs (nested dicts) differ, sorted; a key one lacks differs
    unless the other's value is None."""
    flat_a, flat_b = dotted(a), dotted(b)
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))
