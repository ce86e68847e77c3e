"""checkpoint.pt: one dict, written atomically so an interrupted save never replaces a good one.

torch is imported when a checkpoint is read or written, so that modules which only need the
file's name (plots, tables) start without it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from metarun.config.resume import continuing_differences, describe_differences
from metarun.config.schema import ConfigError
from metarun.files import atomic_writer

FILENAME = "checkpoint.pt"
BEST = "best.pt"  # with eval.select=best: the parameters of the best validation mean so far
FORMAT = 1  # raised when a checkpoint's keys change meaning; readers refuse a newer one by name


def save(out_dir: Path, state: dict[str, Any], filename: str = FILENAME) -> Path:
    import torch

    path = Path(out_dir) / filename
    # Serialised in memory first: torch.save reports a failed write (a full disk) as a RuntimeError that names
    # neither the file nor the cause, while a plain write raises the OSError itself.
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buffer)
    with atomic_writer(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path


def load(out_dir: Path, filename: str = FILENAME) -> dict[str, Any]:
    import torch

    return torch.load(Path(out_dir) / filename, map_location="cpu", weights_only=False)


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
            f"{path} cannot be read as a metarun checkpoint: it is cut short or damaged, or not a checkpoint at all "
            f"(torch.load said {type(e).__name__}). It holds the state a stopped run continues from, so this run "
            "cannot go on from it. Delete it to start this run over, or run in another folder (hydra.run.dir=...)."
        ) from None
    saved = state.get("config") or {}
    changed = continuing_differences(saved, config)
    if changed:
        raise ConfigError(
            f"{path} (iteration {iteration}) was written by a run with a different config "
            f"({describe_differences(saved, config, changed)}), so it cannot be continued with this one. Run the "
            f"same command as before to continue it (`metarun --resume {out_dir}` repeats it), choose another "
            "folder (hydra.run.dir=...), or delete the checkpoint to start over."
        )
    return state

