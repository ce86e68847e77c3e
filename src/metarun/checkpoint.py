"""checkpoint.pt: one dict, written atomically so an interrupted save never replaces a good one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metarun.files import atomic_writer

FILENAME = "checkpoint.pt"


def save(out_dir: Path, state: dict[str, Any]) -> Path:
    path = Path(out_dir) / FILENAME
    with atomic_writer(path, "wb") as f:
        torch.save(state, f)
    return path


def load(out_dir: Path) -> dict[str, Any]:
    return torch.load(Path(out_dir) / FILENAME, map_location="cpu", weights_only=False)
