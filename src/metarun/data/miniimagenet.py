"""miniImageNet (Vinyals et al. 2016) with Ravi & Larochelle's class split, as the few-shot papers use it.

The split is read from the CSVs `train.csv`, `val.csv` and `test.csv` (columns `filename,label`;
64, 16 and 20 classes of 600 images), packaged with metarun or taken from `data.split_dir`.
Classes come in order of first appearance in the CSV, and a class's images in row order.

The images are ImageNet's and are not distributed with metarun. Each split is read from
`data.root` in one of two layouts, checked in this order:

- `mini-imagenet-cache-{split}.pkl`: the pickles distributed with learn2learn and other
  few-shot repositories, a dict with `image_data` (uint8 [N, 84, 84, 3]) and `class_dict`
  ({wnid: [indices into image_data]});
- `images/<filename>`: the folder of JPEGs that Ravi & Larochelle's script
  (github.com/twitter/meta-learning-lstm) produces, one file per CSV row.

Images are converted to RGB and, when not already `image_size` square, resized with Lanczos
antialiasing, then stored as uint8 [classes, per_class, 3, S, S] in one cache per split.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from metarun.config.schema import MiniImageNetData
from metarun.data import cache
from metarun.data.cache import DataError, expand
from metarun.data.classification import SPLITS, ImageClasses, check_request
from metarun.data.fetching import COMMAND, Fetching, declare
from metarun.data.images import read_image, resize
from metarun.data.splits import split_file

log = logging.getLogger(__name__)

PICKLE = "mini-imagenet-cache-{split}.pkl"
FOLDER = "images"
LAYOUTS = (
    "expected, for each of the splits train, val and test, either the pickle mini-imagenet-cache-<split>.pkl or an "
    "images/ folder holding the JPEG named in every row of the split's CSV"
)
HOW_TO_GET = (
    "The images come from ImageNet and are used under its licence: make the images/ folder with Ravi & "
    "Larochelle's script (https://github.com/twitter/meta-learning-lstm), or get the mini-imagenet-cache-*.pkl "
    "files that learn2learn and other few-shot repositories distribute, then point `data.root` (or METARUN_DATA, "
    "the folder holding miniimagenet/) at the folder holding them."
)

# Unpickling can run arbitrary code; the caches hold only dicts, lists, strings and numpy arrays, so nothing
# else is let through. Protocol-2 pickles written by Python 3 store bytes via _codecs.encode.
PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
}

Classes = dict[str, list[str]]  # wnid -> its filenames, in CSV row order


def classes(path: Path, rows: Sequence[tuple[str, str]]) -> Classes:
    """The CSV's classes in order of first appearance; the episode sampler needs equal class sizes."""
    grouped: Classes = {}
    for filename, label in rows:
        grouped.setdefault(label, []).append(filename)
    counts = {label: len(files) for label, files in grouped.items()}
    if len(set(counts.values())) > 1:
        small = min(counts, key=counts.__getitem__)
        large = max(counts, key=counts.__getitem__)
        raise DataError(
            f"the split file {path} has classes of different sizes (e.g. {small} has {counts[small]} rows, {large} "
            f"has {counts[large]}); every class must have the same number of images. Fix the file, or leave "
            "`data.split_dir` empty for the packaged splits."
        )
    return grouped


def locate(root: Path, splits: dict[str, Classes]) -> dict[str, tuple[str, Path]]:
    """Each split's source as (form, path): its pickle when present, else the images/ folder."""
    if not root.is_dir():
        raise DataError(f"`data.root={root}` does not exist ({LAYOUTS}). {HOW_TO_GET}")
    found = {}
    for split, grouped in splits.items():
        pickled, folder = root / PICKLE.format(split=split), root / FOLDER
        if pickled.is_file():
            found[split] = ("pickle", pickled)
        elif folder.is_dir():
            check_files(folder, grouped)
            found[split] = ("images", folder)
        else:
            raise DataError(f"`data.root={root}` has neither {pickled.name} nor an {FOLDER}/ folder ({LAYOUTS}). "
                            f"{HOW_TO_GET}")
    return found


def check_files(folder: Path, grouped: Classes) -> None:
    # Checked up front so that a partial copy fails in seconds, not after minutes of decoding.
    missing = [name for files in grouped.values() for name in files if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder / missing[0]} does not exist ({len(missing)} of the split's images are missing from "
            f"{folder}). The copy is incomplete: replace it. {HOW_TO_GET}"
        )


def decode(path: Path, size: int) -> np.ndarray:
    return read_image(path, size, 3, f"The dataset copy is corrupt: replace that file. {HOW_TO_GET}")


def from_folder(folder: Path, grouped: Classes, size: int, split: str) -> np.ndarray:
    """uint8 [classes, per_class, size, size, 3], class by class in CSV order."""
    per_class = len(next(iter(grouped.values())))
    out = np.empty((len(grouped), per_class, size, size, 3), dtype=np.uint8)
    progress = tqdm(total=out.shape[0] * per_class, desc=f"miniimagenet {split}: preprocessing", unit="img",
                    disable=None)
    with progress:
        for i, files in enumerate(grouped.values()):
            for j, name in enumerate(files):
                out[i, j] = decode(folder / name, size)
                progress.update()
    return out


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a miniImageNet cache never holds")
        return super().find_class(module, name)


def read_pickle(path: Path) -> tuple[np.ndarray, dict]:
    """`image_data` and `class_dict` of one cache pickle."""
    try:
        with open(path, "rb") as f:
            # latin1 lets Python 2 pickles (str keys, numpy buffers) load; Python 3 pickles are unaffected.
            data = _Unpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError, TypeError,
            IndexError, KeyError, MemoryError) as e:
        raise DataError(f"{path} is not a readable miniImageNet pickle ({e}); it is probably truncated or corrupt. "
                        f"Delete it and get it again. {HOW_TO_GET}") from None
    missing = [k for k in ("image_data", "class_dict") if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"{path} has no {' or '.join(missing)}; a miniImageNet pickle is a dict with image_data and "
                        f"class_dict. Replace it. {HOW_TO_GET}")
    images, class_dict = data["image_data"], data["class_dict"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        shape = (images.dtype, images.shape) if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{path}: image_data is {shape}; expected uint8 [N, H, W, 3]. Replace it. {HOW_TO_GET}")
    if not isinstance(class_dict, dict):
        raise DataError(f"{path}: class_dict is a {type(class_dict).__name__}, not a dict of wnid -> image indices. "
                        f"Replace it. {HOW_TO_GET}")
    return images, class_dict


def match_pickle(path: Path, images: np.ndarray, class_dict: dict, grouped: Classes) -> list[np.ndarray]:
    """Each CSV class's indices into image_data, after checking that the pickle has the CSV's classes and counts."""
    missing = [c for c in grouped if c not in class_dict]
    extra = [str(c) for c in class_dict if c not in grouped]
    if missing or extra:
        what = "; ".join(part for part in (
            f"{len(missing)} of the split file's classes are missing (e.g. {missing[0]})" if missing else "",
            f"it has {len(extra)} classes the split file lacks (e.g. {extra[0]})" if extra else "",
        ) if part)
        raise DataError(f"{path} does not hold the split file's classes: {what}. Use the pickle that matches the "
                        "split, or leave `data.split_dir` empty for the packaged splits.")
    picks = []
    for wnid, files in grouped.items():
        try:
            index = np.asarray(class_dict[wnid], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"{path}: class_dict[{wnid!r}] is not a list of image indices. Replace it. "
                            f"{HOW_TO_GET}") from None
        if len(index) != len(files):
            raise DataError(f"{path} has {len(index)} images of class {wnid}; the split file lists {len(files)}. "
                            "Use the pickle that matches the split, or leave `data.split_dir` empty.")
        if len(index) and (index.min() < 0 or index.max() >= len(images)):
            raise DataError(f"{path}: class_dict[{wnid!r}] points past the {len(images)} images in image_data. "
                            f"The file is corrupt: replace it. {HOW_TO_GET}")
        picks.append(index)
    return picks


def from_pickle(path: Path, grouped: Classes, size: int) -> np.ndarray:
    """uint8 [classes, per_class, size, size, 3].

    Within a class the images are taken in class_dict order, assumed to follow the CSV's row
    order (as in the commonly distributed caches, built by walking the CSV); the pickles carry no
    filenames to check it against. Episodes draw images at random, so only the split matters.
    """
    images, class_dict = read_pickle(path)
    picks = match_pickle(path, images, class_dict, grouped)
    out = np.empty((len(picks), len(picks[0]), size, size, 3), dtype=np.uint8)
    for i, index in enumerate(picks):
        chosen = images[index]
        if chosen.shape[1:3] == (size, size):
            out[i] = chosen
        else:
            out[i] = np.stack([resize(Image.fromarray(image), size) for image in chosen])
    return out


def build(form: str, path: Path, grouped: Classes, size: int, split: str) -> Tensor:
    """One split as uint8 [classes, per_class, 3, size, size]."""
    array = from_pickle(path, grouped, size) if form == "pickle" else from_folder(path, grouped, size, split)
    return torch.from_numpy(array).permute(0, 1, 4, 2, 3).contiguous()


class MiniImageNet(ImageClasses):
    def __init__(
        self,
        name: str,
        root: str,
        cache_dir: str,
        image_size: int = 84,
        split_dir: str | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__(name)
        self.root, self.cache_dir, self.image_size, self.split_dir = root, cache_dir, image_size, split_dir
        self.channels = channels
        self.forms: dict[str, str] = {}

    def setup(
        self, device: torch.device, ways: int, train: tuple[int, int], test: tuple[int, int],
        validate: bool = True,
    ) -> None:
        # Checked here, not in __init__, whose errors Hydra's instantiate would wrap.
        if self.channels != 3:
            raise DataError(f"`data.channels={self.channels}` but miniImageNet images are RGB. Set "
                            "`data.channels=3`.")
        files, splits, sources = self.locate()
        sizes = {split: (len(g), len(next(iter(g.values())))) for split, g in splits.items()}
        check_request("miniImageNet", sizes, ways, train, test, validate)
        self.place(self.cached(self.manifests(files, sources), splits, sources), device)
        self.forms = {split: form for split, (form, _) in sources.items()}

    def locate(self) -> tuple[dict, dict[str, Classes], dict[str, tuple[str, Path]]]:
        """The split files, their classes, and each split's source (checked to exist, not yet decoded)."""
        files = {split: split_file("miniimagenet", f"{split}.csv", self.split_dir) for split in SPLITS}
        splits = {split: classes(f.path, f.rows()) for split, f in files.items()}
        return files, splits, locate(expand(self.root), splits)

    def manifests(self, files: dict, sources: dict[str, tuple[str, Path]]) -> dict[str, tuple[Path, dict]]:
        """Each split's cache folder and the manifest its cache must carry to be used."""
        described: dict[Path, dict] = {}  # the images/ folder serves all three splits: list it once
        out = {}
        for split, (form, path) in sources.items():
            if path not in described:
                described[path] = cache.describe(path)
            folder = expand(self.cache_dir) / f"miniimagenet-{self.image_size}-{split}"
            out[split] = folder, {
                "dataset": "miniimagenet", "split": split, "image_size": self.image_size, "resample": "lanczos",
                "split_file": cache.describe(files[split].path), "form": form, "source": described[path],
            }
        return out

    def cached(
        self, manifests: dict[str, tuple[Path, dict]], splits: dict[str, Classes],
        sources: dict[str, tuple[str, Path]],
    ) -> dict[str, Tensor]:
        """Each split from its cache, or built; no cache is written until every split has built."""
        tensors, fresh = {}, {}
        for split, (folder, manifest) in manifests.items():
            images = cache.load(folder, manifest)
            if images is None:
                log.info("building the miniImageNet %s cache in %s (once per source and image size)", split, folder)
                form, path = sources[split]
                images = build(form, path, splits[split], self.image_size, split)
                fresh[split] = (folder, manifest)
            tensors[split] = images
        for split, (folder, manifest) in fresh.items():
            cache.save(folder, tensors[split], manifest, "data.cache_dir")
        return tensors

    def record(self) -> dict:
        return {**super().record(), "image_size": self.image_size, "forms": dict(self.forms)}


# ----------------------------------------------------------------------------- `metarun-data miniimagenet`

HOW_TO_PREPARE = f"""\
miniImageNet (Ravi & Larochelle's split: 64 / 16 / 20 classes of 600 images) is ImageNet's images, which metarun
cannot distribute. Put in DIR, for each of the splits train, val and test, either
  - mini-imagenet-cache-<split>.pkl: the pickles that learn2learn and other few-shot repositories distribute
    (a dict with image_data, uint8 [N, 84, 84, 3], and class_dict, {{wnid: [indices]}}), or
  - images/<filename>.jpg: the JPEGs named in the split's CSV, as Ravi & Larochelle's script makes them
    (https://github.com/twitter/meta-learning-lstm);
then `{COMMAND} miniimagenet --root DIR` verifies every class and image and builds the cache that
`metarun data=miniimagenet data.root=DIR` reads (or set METARUN_DATA to the folder holding miniimagenet/)."""


def _present(root: Path) -> bool:
    return (root / FOLDER).is_dir() or any((root / PICKLE.format(split=s)).is_file() for s in SPLITS)


@declare
class MiniImageNetFetching(Fetching):
    name = MiniImageNetData.name
    target = MiniImageNetData._target_
    summary = "verify your miniImageNet copy and build its cache"
    description = HOW_TO_PREPARE
    raw_description = True
    root = MiniImageNetData.root

    def source(self, root: Path, cache_dir: str | None = None, image_size: int = 84,
               split_dir: str | None = None) -> MiniImageNet:
        cache_dir = cache_dir or str(expand(OmegaConf.create({"cache": MiniImageNetData.cache_dir}).cache))
        return MiniImageNet(self.name, str(root), cache_dir, image_size, split_dir)

    def missing(self, root: Path) -> str | None:
        if _present(root):
            return None
        return (f"miniImageNet is not under {root} (no {FOLDER}/ and no {PICKLE.format(split='train')}). It cannot "
                f"be downloaded: bring your own copy (`{COMMAND} miniimagenet --help` says which layouts are read), "
                "or set `data.root`.")

    def status(self, root: Path | None) -> str:
        if not _present(root):
            return f"missing: bring your own copy (`{COMMAND} miniimagenet --help` says how)"
        source = self.source(root)
        try:
            files, _, sources = source.locate()
        except DataError as e:
            return f"INVALID: {e}"
        forms = ", ".join(sorted({form for form, _ in sources.values()}))
        if all(cache.matches(folder, m) for folder, m in source.manifests(files, sources).values()):
            return f"present ({forms}), verified and cached at {source.image_size}x{source.image_size}"
        return f"present ({forms}), not verified yet: `{COMMAND} miniimagenet` verifies it and builds the cache"

    def arguments(self, parser: argparse.ArgumentParser) -> None:
        default_cache = expand(OmegaConf.create({"cache": MiniImageNetData.cache_dir}).cache)
        parser.add_argument("--cache-dir", help=f"where the cache goes (default: {default_cache}, or $METARUN_CACHE)")
        parser.add_argument("--image-size", type=int, default=84, help="cached image size (default: 84)")
        parser.add_argument("--split-dir", help="a folder with train/val/test.csv (default: the packaged split)")

    def prepare(self, args: argparse.Namespace, root: Path) -> Iterator[str]:
        source = self.source(root, args.cache_dir, args.image_size, args.split_dir)
        if not root.is_dir():
            yield HOW_TO_PREPARE
            raise DataError(f"{source.root} does not exist: put the images there as described above, or name their "
                            "folder with `--root DIR`.")
        start = time.perf_counter()
        source.setup(torch.device("cpu"), 1, (1, 1), (1, 1))
        for split, episodes in source.splits.items():
            yield f"{split}: {episodes.classes} classes x {episodes.per_class} images ({source.forms[split]}), verified"
        yield (f"The {source.image_size}x{source.image_size} cache is in {source.cache_dir} "
               f"({time.perf_counter() - start:.1f} s): `metarun data=miniimagenet data.root={source.root}` starts "
               "from it.")
