"""checkpoint.pt: one dict, written atomically so an interrupted save never replaces a good one.

torch is imported when a checkpoint is read or written, so that modules which only need the
file's name (plots, tables) start without it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from metarun.config import ConfigError
from metarun.files import atomic_writer

FILENAME = "checkpoint.pt"
# How the tasks are executed, not what is computed (the modes give the same gradients, tests/test_execution.py):
# a run may continue with other values, e.g. a smaller `exec.chunk` after running out of GPU memory.
EXECUTION_ONLY = {"exec.mode", "exec.chunk", "exec.workers"}
# Settings added since checkpoints were first written, with the value that older runs had in effect.
ADDED = {"exec.tf32": False, "exec.autocast": "none"}


def save(out_dir: Path, state: dict[str, Any]) -> Path:
    import torch

    path = Path(out_dir) / FILENAME
    # Serialised in memory first: torch.save reports a failed write (a full disk) as a RuntimeError that names
    # neither the file nor the cause, while a plain write raises the OSError itself.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_writer(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path


def load(out_dir: Path) -> dict[str, Any]:
    import torch

    return torch.load(Path(out_dir) / FILENAME, map_location="cpu", weights_only=False)


def saved_iteration(out_dir: Path) -> int | None:
    """The iteration of the folder's checkpoint, or None if it has none that reads (for messages)."""
    import torch

    path = Path(out_dir) / FILENAME
    if not path.is_file():
        return None
    try:  # mmap: the tensors are not read, only the small dict around them
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["iteration"])
    except Exception:
        return None


def resumable(out_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue from, if the folder has one; it must come from this very config."""
    path = Path(out_dir) / FILENAME
    if not path.is_file():
        return None
    try:
        state = load(out_dir)
        iteration = int(state["iteration"])
    except Exception as e:  # a truncated or foreign file: say so rather than guess
        raise ConfigError(
            f"{path} cannot be read as a metarun checkpoint ({type(e).__name__}: {e}). Delete it to start this "
            "run over, or run in another folder."
        ) from None
    changed = set(_differences(state.get("config") or {}, config)) - EXECUTION_ONLY
    changed = sorted(changed - _added_at_default(state, config))
    if changed:
        shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        raise ConfigError(
            f"{path} (iteration {iteration}) was written by a run with a different config ({shown} differ), so it "
            "cannot be continued with this one. Run the same command as before to continue it, choose another "
            "folder (hydra.run.dir=...), or delete the checkpoint to start over."
        )
    return state


def _added_at_default(state: dict[str, Any], config: dict[str, Any]) -> set[str]:
    """The ADDED settings that the checkpoint's config lacks and this config has at their old value."""
    def get(tree: Any, key: str) -> Any:
        for part in key.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        return tree

    saved = state.get("config") or {}
    return {k for k, old in ADDED.items() if get(saved, k) is None and get(config, k) == old}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in a.keys() | b.keys() for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
