"""Omniglot (Lake et al. 2015) as the few-shot papers use it.

Reads the official release: `images_background` and `images_evaluation`, each as the
`.zip` archive or its extracted folder, directly under `data.root` or under
`data.root/omniglot-py/` (torchvision's layout). Content is verified, not only checksums, so
the official archives and repacked copies both pass: every character has its 20 drawings, and
with the packaged splits (made for the full release) the sources hold the official 30 + 20
alphabets and 964 + 659 characters. Split files of one's own (`data.split_dir`) are the contract
instead: every character they name must be there.

Images are resized once to `image_size` with Lanczos antialiasing, as MAML's and Reptile's
preprocessing do, and stored as uint8 with the strokes bright: 255 = ink, 0 = background
(the PNGs are black ink on white; the papers' loaders feed 1 - x). Splits (`data.split`):
- `vinyals` (default): Vinyals et al.'s 1,200 meta-train characters (1,028 train + 172 val)
  and 423 meta-test characters, drawn from both sources;
- `lake`: Lake et al.'s protocol, meta-train on the 964 background characters and meta-test on
  the 659 evaluation characters; validation holds out five whole background alphabets (those
  Meta-Dataset holds out, the five smallest: 81 characters), so `train` has 883.
The meta-train characters rotated by 90, 180 and 270 degrees are new classes, and the
meta-test (and validation) characters are rotated too when `rotate_test` is set.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from tqdm import tqdm

from metarun.config.schema import OmniglotData
from metarun.data import cache
from metarun.data.cache import DataError, expand
from metarun.data.classification import ImageClasses, check_request
from metarun.data.fetching import COMMAND, Fetching, declare
from metarun.data.splits import SplitFile, split_file

log = logging.getLogger(__name__)

SOURCES = {"images_background": (30, 964), "images_evaluation": (20, 659)}  # alphabets, characters
DRAWINGS = 20
POLARITY = "ink=255,background=0"
HOW_TO_GET = (
    "Run `metarun-data omniglot` (it downloads and verifies them), or get images_background.zip and "
    "images_evaluation.zip from https://github.com/brendenlake/omniglot (folder python/) into that folder, or point "
    "`data.root` (or METARUN_DATA, the folder holding omniglot/) at a copy that has them."
)
# Where torchvision's Omniglot downloads the release, and the official archives' md5s (`metarun-data omniglot`).
OFFICIAL_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
OFFICIAL_MD5 = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
                "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
SPLITS = {"vinyals": "omniglot", "lake": "omniglot/lake"}  # data.split -> its packaged folder under metarun/splits
# Lake's protocol with validation: the five smallest background alphabets (14, 14, 16, 17 and 20 characters), the
# ones Meta-Dataset (Triantafillou et al. 2020) holds out; the packaged lake/val.txt lists their characters.
LAKE_VALIDATION = (
    "Alphabet_of_the_Magi", "Blackfoot_(Canadian_Aboriginal_Syllabics)", "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Tagalog",
)

Listing = dict[str, list[str]]  # "Alphabet/characterNN" -> its PNG members, sorted


def find(root: Path, name: str) -> Path | None:
    """One source's archive or folder: root/NAME.zip, root/NAME/, or the same under root/omniglot-py/."""
    candidates = [base / leaf for base in (root, root / "omniglot-py") for leaf in (f"{name}.zip", name)]
    return next((c for c in candidates if c.exists()), None)


def locate(root: Path) -> dict[str, Path]:
    """Both sources, or a DataError saying what is missing and how to get it."""
    if not root.is_dir():
        raise DataError(f"`data.root={root}` does not exist. {HOW_TO_GET}")
    found = {name: find(root, name) for name in SOURCES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"`data.root={root}` has no {' or '.join(missing)} (expected NAME.zip or an extracted NAME/ folder, "
            f"directly there or under omniglot-py/). {HOW_TO_GET}"
        )
    return found  # type: ignore[return-value]


def _open_zip(path: Path, where: Path | str | None = None, fix: str = HOW_TO_GET) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"{where or path} is not a readable zip archive ({e}); it is probably truncated or corrupt. "
            f"Delete it and download it again. {fix}"
        ) from None


def listing(name: str, source: Path) -> Listing:
    """The characters of one source and their drawings, from the archive's index or the folder."""
    if source.is_file():
        with _open_zip(source) as z:
            members = z.namelist()
    else:
        members = [p.relative_to(source.parent).as_posix() for p in source.rglob("*.png")]
    characters = defaultdict(list)
    for member in members:
        parts = member.split("/")
        if len(parts) == 4 and parts[0] == name and parts[3].endswith(".png"):
            characters[f"{parts[1]}/{parts[2]}"].append(member)
    return {k: sorted(v) for k, v in sorted(characters.items())}


def verify(name: str, source: Path | str, characters: Listing, official: bool = True, fix: str = HOW_TO_GET) -> None:
    """20 drawings per character; with `official`, also the release's counts of alphabets and characters."""
    alphabets = {k.split("/")[0] for k in characters}
    want_alphabets, want_characters = SOURCES[name]
    if official and (len(alphabets) != want_alphabets or len(characters) != want_characters):
        raise DataError(
            f"{source} holds {len(alphabets)} alphabets and {len(characters)} characters; the official {name} has "
            f"{want_alphabets} and {want_characters}. The copy is incomplete or not Omniglot: replace it. {fix}"
        )
    short = {k: len(v) for k, v in characters.items() if len(v) != DRAWINGS}
    if short:
        key, count = next(iter(short.items()))
        raise DataError(
            f"{source}: {len(short)} characters do not have {DRAWINGS} drawings (e.g. {key} has {count}). "
            f"The copy is incomplete: replace it. {fix}"
        )


def verify_archive(name: str, path: Path, where: str, fix: str = HOW_TO_GET) -> Listing:
    """A whole archive: readable, every member's CRC intact, and the official content; `where` names it."""
    with _open_zip(path, where, fix) as z:
        try:
            bad = z.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            bad = f"? ({e})"
    if bad is not None:
        raise DataError(f"{where}: the member {bad} is corrupt (its CRC does not match); the archive is damaged. "
                        f"Delete it and download it again. {fix}")
    characters = listing(name, path)
    verify(name, where, characters, fix=fix)
    return characters


def check_lake(files: dict[str, SplitFile], known: list[str], listings: dict[str, Listing]) -> None:
    """Lake's protocol: meta-training (trainval, train) and validation from the background alphabets, whole
    alphabets held out for validation, meta-testing on the evaluation alphabets."""
    names = {stem: f.characters(known) for stem, f in files.items()}
    for stem, chars in names.items():
        source = "images_evaluation" if stem == "test" else "images_background"
        strays = [c for c in chars if c not in listings[source]]
        if strays:
            raise DataError(
                f"`data.split=lake` takes its {stem} characters from {source} only, but the split file "
                f"{files[stem].path} names {len(strays)} that are not there (e.g. {strays[0]!r}). Fix the file, or "
                "use `data.split=vinyals` for a split that mixes the two sources."
            )
    shared = {c.split("/")[0] for c in names["train"]} & {c.split("/")[0] for c in names["val"]}
    if shared:
        raise DataError(
            f"`data.split=lake` holds whole alphabets out for validation, but {sorted(shared)[0]} is in both "
            f"{files['train'].path} and {files['val'].path}. Fix the files, or leave `data.split_dir` empty for the "
            "packaged split."
        )


def decode(data: bytes, size: int, where: str) -> np.ndarray:
    """One drawing as uint8 [size, size], ink bright."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    except (OSError, SyntaxError, ValueError) as e:
        # PIL's own text for an unknown format ends in the repr of the in-memory buffer: no use to anyone.
        reason = "not an image format PIL knows" if isinstance(e, UnidentifiedImageError) else e
        raise DataError(f"{where} is not a readable PNG ({reason}). The dataset copy is corrupt: replace it. "
                        f"{HOW_TO_GET}") from None
    return 255 - np.asarray(small, dtype=np.uint8)


def _reader(source: Path):
    if source.is_file():
        archive = _open_zip(source)

        def read(member: str) -> bytes:
            try:
                return archive.read(member)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise DataError(f"{source}: cannot read {member} ({e}); the archive is corrupt. "
                                f"Delete it and download it again. {HOW_TO_GET}") from None

        return read
    return lambda member: (source.parent / member).read_bytes()


def build(sources: dict[str, Path], listings: dict[str, Listing], size: int) -> Tensor:
    """All characters in sorted-name order: uint8 [1623, 20, 1, size, size]."""
    order = sorted((key, name) for name, characters in listings.items() for key in characters)
    out = np.empty((len(order), DRAWINGS, size, size), dtype=np.uint8)
    readers = {name: _reader(path) for name, path in sources.items()}
    for i, (key, name) in enumerate(tqdm(order, desc="omniglot: preprocessing", unit="char", disable=None)):
        for j, member in enumerate(listings[name][key]):
            out[i, j] = decode(readers[name](member), size, f"{sources[name]}: {member}")
    return torch.from_numpy(out)[:, :, None]


def rotations(images: Tensor) -> Tensor:
    """[C, ...] -> [4C, ...]: each class, then each rotated by 90, 180, 270 degrees, as new classes."""
    return torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])


class Omniglot(ImageClasses):
    def __init__(
        self,
        name: str,
        root: str,
        cache_dir: str,
        image_size: int = 28,
        rotate_test: bool = True,
        split: str = "vinyals",
        train_split: str = "trainval",
        split_dir: str | None = None,
        channels: int = 1,
    ) -> None:
        super().__init__(name)
        self.root, self.cache_dir, self.image_size = root, cache_dir, image_size
        self.rotate_test, self.split, self.train_split, self.split_dir = rotate_test, split, train_split, split_dir

    def check(self) -> None:
        """The settings (checked here, not in __init__, whose errors Hydra's instantiate would wrap)."""
        if self.split not in SPLITS:
            raise DataError(f"`data.split={self.split}` is unknown. Use `vinyals` (Vinyals et al.'s 1,200 + 423 "
                            "characters, the default) or `lake` (Lake et al.'s 964 background + 659 evaluation).")
        if self.train_split not in ("trainval", "train"):
            raise DataError(f"`data.train_split={self.train_split}` is unknown. Use `trainval` (every meta-train "
                            "character, the papers' choice) or `train` (holding out the validation characters).")

    def setup(
        self, device: torch.device, ways: int, train: tuple[int, int], test: tuple[int, int],
        validate: bool = True,
    ) -> None:
        self.check()
        root = expand(self.root)
        sources = locate(root)
        listings = {name: listing(name, path) for name, path in sources.items()}
        for name, characters in listings.items():
            verify(name, sources[name], characters, official=not self.split_dir)
        known = sorted(k for characters in listings.values() for k in characters)
        if self.split == "lake":
            stems = ("trainval", "train", "val", "test")
            check_lake({s: split_file(SPLITS["lake"], f"{s}.txt", self.split_dir) for s in stems}, known, listings)
        names = {split: split_file(SPLITS[self.split], f"{stem}.txt", self.split_dir).characters(known)
                 for split, stem in (("train", self.train_split), ("val", "val"), ("test", "test"))}
        held_out = 4 if self.rotate_test else 1
        sizes = {s: (len(n) * (4 if s == "train" else held_out), DRAWINGS) for s, n in names.items()}
        check_request("Omniglot", sizes, ways, train, test, validate)

        images = self.cached(sources, listings)
        index = {key: i for i, key in enumerate(known)}
        tensors = {}
        for split, chars in names.items():
            chosen = images[torch.tensor([index[c] for c in chars])]
            tensors[split] = rotations(chosen) if split == "train" or self.rotate_test else chosen
        self.place(tensors, device)

    def cached(self, sources: dict[str, Path], listings: dict[str, Listing]) -> Tensor:
        folder = expand(self.cache_dir) / f"omniglot-{self.image_size}"
        manifest = {
            "dataset": "omniglot", "image_size": self.image_size, "polarity": POLARITY, "resample": "lanczos",
            "sources": {name: cache.describe(path) for name, path in sources.items()},
        }
        images = cache.load(folder, manifest)
        if images is None:
            log.info("building the Omniglot cache in %s (once per source and image size)", folder)
            images = build(sources, listings, self.image_size)
            cache.save(folder, images, manifest, "data.cache_dir")
        return images

    def record(self) -> dict:
        return {**super().record(), "image_size": self.image_size, "rotate_test": self.rotate_test,
                "split": self.split, "train_split": self.train_split, "split_dir": self.split_dir}


# ----------------------------------------------------------------------------- `metarun-data omniglot`

URL_ENV = "METARUN_OMNIGLOT_URL"


def verdict(name: str, path: Path, md5: str | None, where: str, fix: str) -> str:
    """Say what a source is, or raise DataError: the official archive (md5), or a copy whose content verifies."""
    official = OFFICIAL_MD5[name]
    if md5 == official:
        return "the official archive (md5 matches)"
    if path.is_dir():
        verify(name, where, listing(name, path), fix=fix)
        return "an extracted folder whose content verifies (alphabets, characters, 20 drawings each)"
    try:
        characters = verify_archive(name, path, where, fix=fix)
    except DataError as e:
        raise DataError(f"{where} has md5 {md5}, not the official archive's {official}, and its content is not "
                        f"the release either: {e}") from None
    return (f"md5 {md5} is not the official archive's, but its content verifies ({len(characters)} characters, "
            "20 drawings each, every member's CRC intact): a repacked copy")


def _downloaded(name: str, tmp: Path, md5: str, url: str, dest: Path) -> str:
    """The verdict on a download; a refusal is a failed download (exit 1), and nothing is kept."""
    from metarun.data.download import DownloadError

    fix = f"The server does not serve the Omniglot release: check `--url` (or {URL_ENV})."
    try:
        return verdict(name, tmp, md5, url, fix)
    except DataError as e:
        raise DownloadError(f"{e} Nothing was kept under {dest}.") from None


@declare
class OmniglotFetching(Fetching):
    name = OmniglotData.name
    target = OmniglotData._target_
    summary = "download the official Omniglot archives and verify them"
    description = ("Download images_background.zip and images_evaluation.zip (torchvision's URLs), check their md5 "
                   "(or, for a repacked copy, their content), and leave them where `data=omniglot` looks. "
                   "Archives already there are verified, not downloaded again.")
    root = OmniglotData.root

    def missing(self, root: Path) -> str | None:
        absent = [name for name in SOURCES if find(root, name) is None]
        if absent:
            return (f"Omniglot is not under {root} ({' and '.join(absent)} missing). `{COMMAND} omniglot` "
                    "downloads it there (the folder follows METARUN_DATA), or set `data.root` to where it is.")
        return None

    def status(self, root: Path | None) -> str:
        found = {name: find(root, name) for name in SOURCES}
        absent = [name for name, path in found.items() if path is None]
        if absent:
            return f"missing ({' and '.join(absent)}): `{COMMAND} omniglot` downloads it"
        kinds = []
        try:
            for name, path in found.items():
                md5 = cache.file_digest(path, "md5") if path.is_file() else None
                verdict(name, path, md5, str(path), "")
                kinds.append("official" if md5 == OFFICIAL_MD5[name] else "content-verified copy")
        except DataError as e:
            return f"INVALID: {e}"
        return f"present, verified ({', '.join(sorted(set(kinds)))})"

    def arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", help=f"base URL of the two archives, e.g. a mirror (default: ${URL_ENV}, else "
                                          f"the official {OFFICIAL_URL})")

    def prepare(self, args: argparse.Namespace, root: Path) -> Iterator[str]:
        from metarun.data.download import fetch

        base = (args.url or os.environ.get(URL_ENV) or OFFICIAL_URL).rstrip("/")
        offline = ("Without network access: get images_background.zip and images_evaluation.zip from "
                   f"https://github.com/brendenlake/omniglot (folder python/) on another machine, put them in {root}, "
                   f"and run `{COMMAND} omniglot --root {root}` to verify them.")
        for name in SOURCES:
            found = find(root, name)
            if found is not None:
                md5 = cache.file_digest(found, "md5") if found.is_file() else None
                fix = f"Delete it and run `{COMMAND} omniglot` again to download it."
                yield f"{name}: {found} is present: {verdict(name, found, md5, str(found), fix)}"
                continue
            url, dest = f"{base}/{name}.zip", root / f"{name}.zip"
            note = fetch(url, dest, lambda tmp, md5, name=name, url=url, dest=dest: _downloaded(name, tmp, md5, url,
                                                                                                 dest), offline)
            yield f"{name}: downloaded {url} to {dest}: {note}"
        where = "" if root == self.default_root() else f" data.root={root}"
        yield f"Omniglot is ready: `metarun data=omniglot{where}` reads it."
