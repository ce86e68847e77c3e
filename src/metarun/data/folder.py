"""A user's own images as a few-shot dataset: `data=folder data.root=PATH`.

Two layouts, the first that applies:
- `data.split_csv=FILE` (relative paths are taken under `data.root`): one folder per class,
  `PATH/<class>/`, and a CSV with the columns `class,split` putting each class in train, val
  or test; class folders the CSV does not name are left out (with a warning);
- `PATH/train/<class>/`, `PATH/val/<class>/`, `PATH/test/<class>/` (val may be absent when the
  run does not validate, `eval.val_tasks=0`).

A class is every image file under its folder (subfolders included), in name order: .png, .jpg,
.jpeg, .bmp, .gif, .tif, .tiff and .webp; other files are skipped with a warning. Each image is
converted to `channels` (1: grayscale, 3: RGB) and resized to `image_size` square with Lanczos
antialiasing (the aspect ratio is not kept: crop first if it matters), then cached once as one
uint8 tensor with the verified-cache machinery (a manifest of the folder's listing).

Classes may differ in size; an episode draws K + Q distinct images from however many its class
has. A class with fewer images than the run's episodes need (train.shots + train.queries in
train, shots + queries in val and test) is refused, never dropped: dropping it would make the
classes a run is tested on depend on `shots`, so 1-shot and 5-shot numbers would not compare.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from metarun.config.schema import FolderData
from metarun.data import cache
from metarun.data.cache import DataError, expand
from metarun.data.classification import SPLITS, ImageClasses, check_request
from metarun.data.fetching import Fetching, declare
from metarun.data.images import MODES, read_image

log = logging.getLogger(__name__)

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CSV_COLUMNS = ["class", "split"]
LAYOUTS = (
    "expected either PATH/train/<class>/, PATH/test/<class>/ (and PATH/val/<class>/ to validate) holding each "
    "class's images, or PATH/<class>/ folders with `data.split_csv=FILE`, a CSV with the columns class,split"
)

Classes = dict[str, list[Path]]  # class name -> its image files, in name order


def images_of(folder: Path) -> tuple[list[Path], list[Path]]:
    """A class folder's image files and its other files, each sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in SUFFIXES]
    return images, [p for p in files if p.suffix.lower() not in SUFFIXES]


def class_folders(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def from_split_folders(root: Path) -> dict[str, dict[str, Path]]:
    present = {split: class_folders(root / split) for split in SPLITS if (root / split).is_dir()}
    missing = [split for split in ("train", "test") if split not in present]
    if missing:
        raise DataError(f"`data.root={root}` has no {' or '.join(f'{s}/' for s in missing)} folder ({LAYOUTS}).")
    seen: dict[str, str] = {}
    for split, classes in present.items():
        for name in classes:
            if seen.setdefault(name, split) != split:
                raise DataError(
                    f"`data.root={root}`: the class {name!r} is in both {seen[name]}/ and {split}/. Few-shot "
                    "meta-testing needs classes that meta-training never saw; this looks like a split of the same "
                    "classes' images for supervised learning. Give each class one split (or use `data.split_csv`)."
                )
    return present


def from_split_csv(root: Path, path: Path) -> dict[str, dict[str, Path]]:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))  # a spreadsheet's BOM too
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read `data.split_csv={path}` ({e}). Point it at a CSV with the columns "
                        "class,split.") from None
    if not rows or rows[0] != CSV_COLUMNS:
        raise DataError(f"`data.split_csv={path}` has columns {rows[0] if rows else []}; expected {CSV_COLUMNS}, "
                        "one row per class folder of `data.root` with its split (train, val or test).")
    named: dict[str, str] = {}
    for row in (r for r in rows[1:] if r):
        if len(row) != 2 or row[1] not in SPLITS or named.setdefault(row[0], row[1]) != row[1]:
            raise DataError(f"`data.split_csv={path}`: the row {','.join(row)!r} is not `class,split` with split "
                            "train, val or test, or puts a class in two splits. Fix the file.")
    missing = [name for name in named if not (root / name).is_dir()]
    if missing:
        raise DataError(f"`data.split_csv={path}` names {len(missing)} class(es) that have no folder in "
                        f"`data.root={root}` (e.g. {missing[0]!r}). Fix the file, or add the class's folder.")
    unnamed = [name for name in class_folders(root) if name not in named]
    if unnamed:
        log.warning("%s: %d class folder(s) that %s does not name are left out (e.g. %s)", root, len(unnamed),
                    path.name, unnamed[0])
    return {split: {name: root / name for name in named if named[name] == split}
            for split in SPLITS if split in named.values()}


def list_classes(root: Path, split_csv: str | None) -> tuple[str, dict[str, Classes]]:
    """The layout's name and each split's classes with their image files."""
    if split_csv:
        path = Path(split_csv) if Path(split_csv).is_absolute() else root / split_csv
        layout, folders = "split_csv", from_split_csv(root, path)
    else:
        layout, folders = "split_folders", from_split_folders(root)
    splits: dict[str, Classes] = {}
    skipped: list[Path] = []
    for split, classes in folders.items():
        splits[split] = {}
        for name, folder in classes.items():
            splits[split][name], others = images_of(folder)
            skipped += others
    if skipped:
        log.warning("%s: skipped %d file(s) that are not images by their extension (e.g. %s); images are %s",
                    root, len(skipped), skipped[0], " ".join(sorted(SUFFIXES)))
    return layout, splits


def check_sizes(root: Path, splits: dict[str, Classes], ways: int, train: tuple[int, int],
                test: tuple[int, int], validate: bool) -> None:
    """Refuse classes too small for the run's episodes, naming them; then the usual request check."""
    for split, classes in splits.items():
        if split == "val" and not validate:
            continue
        shots, queries = train if split == "train" else test
        keys = ("train.shots", "train.queries") if split == "train" else ("shots", "queries")
        small = sorted((len(files), name) for name, files in classes.items() if len(files) < shots + queries)
        if small:
            named = ", ".join(f"{name} ({count})" for count, name in small[:5])
            raise DataError(
                f"`data.root={root}`: {len(small)} class(es) of the {split} split have fewer than the "
                f"{shots + queries} images an episode takes from each (`{keys[0]}` + `{keys[1]}`): {named}"
                f"{', ...' if len(small) > 5 else ''}. Such classes are refused, not dropped. Add images, move "
                f"those classes out of the {split} split, or lower `{keys[1]}` (or `{keys[0]}`) to fit the "
                f"smallest ({small[0][0]})."
            )
    sizes = {split: (len(c), min((len(f) for f in c.values()), default=0)) for split, c in splits.items()}
    check_request("folder", sizes, ways, train, test, validate)  # images per class vouched for above: `ways`


def build(splits: dict[str, Classes], size: int, channels: int) -> Tensor:
    """Every split's images, class after class: uint8 [total, channels, size, size]."""
    files = [path for classes in splits.values() for paths in classes.values() for path in paths]
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)
    fix = "Delete or replace that file (every image file under a class folder is read)."
    for i, path in enumerate(tqdm(files, desc="folder: preprocessing", unit="img", disable=None)):
        out[i] = read_image(path, size, channels, fix)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class ImageFolder(ImageClasses):
    def __init__(
        self,
        name: str,
        root: str | None,
        cache_dir: str,
        image_size: int = 84,
        channels: int = 3,
        split_csv: str | None = None,
    ) -> None:
        super().__init__(name)
        self.root, self.cache_dir, self.image_size = expand(root or ""), cache_dir, image_size
        self.given_root, self.channels, self.split_csv = root, channels, split_csv
        self.layout, self.images_per_split = "", {}

    def check(self) -> None:
        """The settings (checked here, not in __init__, whose errors Hydra's instantiate would wrap)."""
        if not self.given_root:
            raise DataError(f"`data=folder` needs `data.root=PATH`, the folder holding your images ({LAYOUTS}).")
        if self.channels not in MODES:
            raise DataError(f"`data.channels={self.channels}` is unsupported. Use `data.channels=3` (RGB) or "
                            "`data.channels=1` (grayscale).")

    def setup(
        self, device: torch.device, ways: int, train: tuple[int, int], test: tuple[int, int],
        validate: bool = True,
    ) -> None:
        self.check()
        if not self.root.is_dir():
            raise DataError(f"`data.root={self.root}` does not exist ({LAYOUTS}).")
        self.layout, splits = list_classes(self.root, self.split_csv)
        if validate and "val" not in splits:
            raise DataError(f"`data.root={self.root}` has no validation classes (a val/ folder, or rows with split "
                            "val in `data.split_csv`). Add some, or set `eval.val_tasks=0` to train without "
                            "validation.")
        check_sizes(self.root, splits, ways, train, test, validate)
        images = self.cached(splits)
        tensors, counts, start = {}, {}, 0
        for split, classes in splits.items():
            counts[split] = [len(files) for files in classes.values()]
            tensors[split] = images[start:start + sum(counts[split])]
            start += sum(counts[split])
        if not validate:
            tensors.pop("val", None)
        self.place(tensors, device, counts)
        self.images_per_split = {split: sum(c) for split, c in counts.items() if split in tensors}

    def cached(self, splits: dict[str, Classes]) -> Tensor:
        # One cache per data folder (and size): two datasets never take turns overwriting one cache.
        tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:10]
        folder = expand(self.cache_dir) / f"folder-{self.root.name}-{tag}-{self.image_size}-{self.channels}ch"
        manifest = {
            "dataset": "folder", "image_size": self.image_size, "channels": self.channels, "resample": "lanczos",
            "layout": self.layout, "source": cache.describe(self.root),
            "classes": {split: [[name, len(files)] for name, files in classes.items()]
                        for split, classes in splits.items()},
        }
        images = cache.load(folder, manifest)
        if images is None:
            log.info("building the image cache of %s in %s (once per folder content and image size)",
                     self.root, folder)
            images = build(splits, self.image_size, self.channels)
            cache.save(folder, images, manifest, "data.cache_dir")
        return images

    def record(self) -> dict:
        return {**super().record(), "image_size": self.image_size, "channels": self.channels, "root": str(self.root),
                "layout": self.layout, **{f"{split}_images": n for split, n in self.images_per_split.items()}}


@declare
class FolderFetching(Fetching):
    name, target = FolderData.name, FolderData._target_
    summary = "your own images: `metarun data=folder data.root=PATH` (docs/data.md, Your own dataset)"
