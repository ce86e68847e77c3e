"""Small datasets in the real on-disk layouts, written by the tests themselves: they need nothing beside the clone.

Omniglot: `images_background.zip` and `images_evaluation.zip` holding real 105x105 1-bit PNGs of random strokes
in the release's `images_<source>/<Alphabet>/characterNN/<id>_<drawer>.png` layout (real alphabet names, three
characters each, 20 drawings), and split files naming those characters for both packaged protocols.
Image folders (`data=folder`): one folder per class of small PNG or JPEG files.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

ALPHABETS = {
    "images_background": ["Alphabet_of_the_Magi", "Greek", "Latin", "Tagalog"],
    "images_evaluation": ["Angelic", "Gurmukhi"],
}
CHARACTERS, DRAWINGS = 3, 20


def characters(source: str, *alphabets: str) -> list[str]:
    """`Alphabet/characterNN` keys of a source, all of its alphabets unless some are named."""
    return [f"{a}/character{j:02d}" for a in ALPHABETS[source] if not alphabets or a in alphabets
            for j in range(1, CHARACTERS + 1)]


BACKGROUND, EVALUATION = characters("images_background"), characters("images_evaluation")
# Both protocols over the synthetic characters, as the packaged files are over the real ones: Vinyals mixes the
# sources; Lake trains on the background alphabets, validates on whole held-out ones and tests on evaluation.
SPLITS = {
    "vinyals": {"trainval": BACKGROUND + characters("images_evaluation", "Angelic"),
                "val": characters("images_background", "Greek"),
                "test": characters("images_evaluation", "Gurmukhi")},
    "lake": {"trainval": BACKGROUND, "val": characters("images_background", "Alphabet_of_the_Magi", "Tagalog"),
             "test": EVALUATION},
}
for _split in SPLITS.values():
    _split["train"] = [c for c in _split["trainval"] if c not in _split["val"]]
FIRST = "images_background/Alphabet_of_the_Magi/character01/0001_01.png"


def drawing(rng: np.random.Generator) -> bytes:
    """A 105x105 1-bit PNG, black strokes on white, as the release's drawings are."""
    image = Image.new("1", (105, 105), 1)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        draw.line([tuple(p) for p in rng.integers(5, 100, (4, 2)).tolist()], fill=0, width=3)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def write_omniglot(root: Path, seed: int = 0) -> dict[str, Path]:
    """Both archives in `root`, deflated with folder entries like the official ones; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    rng, number, paths = np.random.default_rng(seed), 0, {}
    for source, alphabets in ALPHABETS.items():
        paths[source] = root / f"{source}.zip"
        with zipfile.ZipFile(paths[source], "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{source}/", b"")
            for alphabet in alphabets:
                z.writestr(f"{source}/{alphabet}/", b"")
                for j in range(1, CHARACTERS + 1):
                    number += 1
                    folder = f"{source}/{alphabet}/character{j:02d}/"
                    z.writestr(folder, b"")
                    for d in range(1, DRAWINGS + 1):
                        z.writestr(f"{folder}{number:04d}_{d:02d}.png", drawing(rng))
    return paths


class SyntheticOmniglot(NamedTuple):
    data: Path  # holds images_background.zip and images_evaluation.zip
    splits: dict[str, Path]  # protocol (vinyals, lake) -> a split_dir naming the synthetic characters


def write_splits(folder: Path, protocol: str, extra: dict[str, list[str]] | None = None) -> Path:
    """trainval/train/val/test.txt of a protocol over the synthetic characters, plus `extra` lines per file."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, names in SPLITS[protocol].items():
        (folder / f"{stem}.txt").write_text("\n".join(names + (extra or {}).get(stem, [])) + "\n")
    return folder


def rezip(src: Path, dst: Path, changes: dict[str, bytes | None]) -> None:
    """A copy of an archive with some members replaced (bytes) or left out (None)."""
    with zipfile.ZipFile(src) as zin:
        members = [(info, changes.get(info.filename, zin.read(info))) for info in zin.infolist()]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info, data in members:
            if data is not None:
                zout.writestr(info.filename, data)


def write_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (12, 12), mode: str = "RGB") -> None:
    """A small image of noise in `mode` (RGB or L), PNG or JPEG by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def write_folder(root: Path, sizes: dict[str, dict[str, int]], seed: int = 0, suffix: str = ".png",
                 size: tuple[int, int] = (12, 12)) -> Path:
    """`root/<split>/<class>/NNN<suffix>` with sizes[split][class] images each."""
    rng = np.random.default_rng(seed)
    for split, classes in sizes.items():
        for name, count in classes.items():
            for i in range(count):
                write_image(root / split / name / f"{i:03d}{suffix}", rng, size)
    return root
