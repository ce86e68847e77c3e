"""The preprocessed-image cache: one uint8 tensor and a manifest saying what it was built from.

A cache is used only when its manifest matches what the loader would build now (the
sources' sizes and checksums, image size, split files) and the tensor's bytes match the
checksum in the manifest; anything else is rebuilt. The manifest is written last and
removed first, so a crash part-way leaves no cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metarun.config.schema import ConfigError
from metarun.files import atomic_write, atomic_writer

log = logging.getLogger(__name__)

IMAGES = "images.pt"
MANIFEST = "manifest.json"
FORMAT = 1


class DataError(ConfigError):
    """Data that is missing, incomplete or corrupt; the message names the file and the fix."""


def expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path))))


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path)


def describe(path: Path) -> dict[str, Any]:
    """Size and checksum of a source: a file's bytes, or a folder's listing (names, sizes, mtimes).

    The path is left out on purpose: the same data moved elsewhere keeps its cache.
    """
    if path.is_file():
        return {"kind": "file", "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    digest, total, count = hashlib.sha256(), 0, 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        total, count = total + stat.st_size, count + 1
    return {"kind": "folder", "files": count, "bytes": total, "sha256": digest.hexdigest()}


def matches(folder: Path, expected: dict[str, Any]) -> bool:
    """Whether a cache's manifest vouches for `expected`, without reading (or checking) its tensor."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in expected.items()) and (folder / IMAGES).is_file()


def load(folder: Path, expected: dict[str, Any]) -> Tensor | None:
    """The cached tensor if the manifest matches `expected` and the tensor its checksum; else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    stale = [k for k, v in expected.items() if manifest.get(k) != v]
    if stale:
        log.info("cache %s is stale (%s changed): rebuilding", folder, ", ".join(stale))
        return None
    path = folder / IMAGES
    try:
        if sha256_file(path) != manifest["tensor_sha256"]:
            log.warning("cache %s does not match its checksum: rebuilding", path)
            return None
        images = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, KeyError, ValueError):
        log.warning("cache %s is unreadable: rebuilding", path)
        return None
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or list(images.shape) != manifest.get("shape"):
        return None
    return images


def save(folder: Path, images: Tensor, manifest: dict[str, Any], setting: str) -> None:
    """Write the tensor, then the manifest that vouches for it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)
        with atomic_writer(folder / IMAGES, "wb") as f:
            torch.save(images.contiguous(), f)
        record = {"format": FORMAT, **manifest, "shape": list(images.shape),
                  "tensor_sha256": sha256_file(folder / IMAGES)}
        atomic_write(folder / MANIFEST, json.dumps(record, indent=1) + "\n")
    except OSError as e:
        raise DataError(
            f"cannot write the preprocessed-data cache in {folder} ({e.strerror or e}). Point `{setting}` at a "
            "writable folder (or set METARUN_CACHE)."
        ) from None
