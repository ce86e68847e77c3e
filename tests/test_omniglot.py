"""The Omniglot loader on small archives in the release's layout that the tests write (tests/synthetic.py): both
split protocols, rotations, decoding, the cache, the layouts it reads, and bad input. The real release's counts,
split sizes and runs: tests/test_omniglot_real.py."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarun.data import omniglot
from metarun.data.cache import MANIFEST, DataError
from metarun.data.omniglot import Omniglot
from synthetic import ALPHABETS, CHARACTERS, DRAWINGS, FIRST, SPLITS, rezip, write_splits

CPU = torch.device("cpu")
EPISODES = dict(ways=5, train=(1, 15), test=(1, 15))
COUNT = {source: len(a) * CHARACTERS for source, a in ALPHABETS.items()}  # characters per archive


def loaded(data, cache: Path, protocol: str = "vinyals", root: Path | None = None, **settings) -> Omniglot:
    """The loader set up on the synthetic archives (or `root`) with the protocol's synthetic split files."""
    settings.setdefault("split_dir", str(data.splits[protocol]))
    episodes = {**EPISODES, **settings.pop("episodes", {})}
    source = Omniglot("omniglot", str(root or data.data), str(cache), split=protocol, **settings)
    source.setup(CPU, **episodes)
    return source


def classes(source: Omniglot) -> dict[str, int]:
    return {split: s.classes for split, s in source.splits.items()}


def test_split_sizes_of_both_protocols(synthetic_omniglot, tmp_path):
    cache = tmp_path / "cache"
    sizes = {p: {s: len(names) for s, names in splits.items()} for p, splits in SPLITS.items()}
    for protocol, n in sizes.items():
        source = loaded(synthetic_omniglot, cache, protocol)
        assert classes(source) == {"train": 4 * n["trainval"], "val": 4 * n["val"], "test": 4 * n["test"]}
        assert source.record()["split"] == protocol
        assert source.record()["split_dir"] == str(synthetic_omniglot.splits[protocol])
        held_out = loaded(synthetic_omniglot, cache, protocol, rotate_test=False, train_split="train",
                          episodes={"ways": 3})
        assert classes(held_out) == {"train": 4 * n["train"], "val": n["val"], "test": n["test"]}
    # Lake's protocol: background characters in training and validation, evaluation characters in testing.
    assert sizes["lake"] == {"trainval": COUNT["images_background"], "val": 2 * CHARACTERS,
                             "test": COUNT["images_evaluation"], "train": COUNT["images_background"] - 2 * CHARACTERS}
    manifest = json.loads((cache / "omniglot-28" / MANIFEST).read_text())
    assert manifest["shape"] == [sum(COUNT.values()), DRAWINGS, 1, 28, 28]


def test_rotated_classes_are_exact_rotations(synthetic_omniglot, tmp_path):
    train = loaded(synthetic_omniglot, tmp_path).splits["train"].images
    n = len(SPLITS["vinyals"]["trainval"])
    base = train[:n]
    for k in (1, 2, 3):
        assert torch.equal(train[n * k:n * (k + 1)], torch.rot90(base, k, dims=(-2, -1)))
    assert not torch.equal(train[n:2 * n], base)


def test_first_training_class_is_its_drawings_resized_with_ink_bright(synthetic_omniglot, tmp_path):
    first = SPLITS["vinyals"]["trainval"][0]
    assert FIRST.startswith(f"images_background/{first}/")
    with zipfile.ZipFile(synthetic_omniglot.data / "images_background.zip") as z:
        members = sorted(n for n in z.namelist() if n.startswith(f"images_background/{first}/") and n.endswith(".png"))
        expected = [255 - np.asarray(Image.open(io.BytesIO(z.read(m))).convert("L").resize((28, 28), Image.LANCZOS))
                    for m in members]
    images = loaded(synthetic_omniglot, tmp_path).splits["train"].images[0, :, 0]
    assert len(members) == DRAWINGS and torch.equal(images, torch.from_numpy(np.stack(expected)))
    assert (images[:, 0, 0] == 0).all() and images.float().mean() < 60  # background dark, strokes bright


def test_the_packaged_splits_need_the_whole_release(synthetic_omniglot, tmp_path):
    """Verification of real data is not relaxed for small archives: they pass only with split files naming them."""
    with pytest.raises(DataError, match=r"images_background.zip holds 4 alphabets and 12 characters; the official "
                                        r"images_background has 30 and 964"):
        loaded(synthetic_omniglot, tmp_path, split_dir=None)
    with pytest.raises(DataError, match=r"images_background.zip holds 4 alphabets"):
        loaded(synthetic_omniglot, tmp_path, "lake", split_dir=None)
    evaluation = synthetic_omniglot.data / "images_evaluation.zip"
    with pytest.raises(DataError, match=r"images_evaluation.zip holds 2 alphabets and 6 characters; the official "
                                        r"images_evaluation has 20 and 659"):
        omniglot.verify("images_evaluation", evaluation, omniglot.listing("images_evaluation", evaluation))


def test_lake_refuses_split_files_that_break_its_protocol(synthetic_omniglot, tmp_path):
    stray = write_splits(tmp_path / "stray", "lake", {"train": ["Angelic/character01"],
                                                      "trainval": ["Angelic/character01"]})
    with pytest.raises(DataError, match=r"`data.split=lake` takes its trainval characters from images_background only, "
                                        r"but the split file .*trainval.txt names 1 that are not there \(e.g. "
                                        r"'Angelic/character01'\).*`data.split=vinyals`"):
        loaded(synthetic_omniglot, tmp_path, "lake", split_dir=str(stray))
    shared = write_splits(tmp_path / "shared", "lake", {"val": ["Latin/character01"]})
    with pytest.raises(DataError, match=r"holds whole alphabets out for validation, but Latin is in both"):
        loaded(synthetic_omniglot, tmp_path, "lake", split_dir=str(shared))
    # The same files are a valid Vinyals-style split, which mixes the sources.
    assert classes(loaded(synthetic_omniglot, tmp_path, "vinyals", split_dir=str(stray)))["train"] == 4 * (12 + 1)


def test_unknown_split_protocol(tmp_path):
    with pytest.raises(DataError, match=r"`data.split=lakes` is unknown. Use `vinyals`.*or `lake`"):
        Omniglot("omniglot", str(tmp_path), str(tmp_path), split="lakes").setup(CPU, **EPISODES)


def copy_data(synthetic_omniglot, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synthetic_omniglot.data, root)
    return root


def fake_build(calls: list):
    def build(sources, listings, size):
        calls.append(size)
        return torch.zeros(sum(COUNT.values()), DRAWINGS, 1, size, size, dtype=torch.uint8)
    return build


def test_cache_is_reused_when_fresh_and_rebuilt_when_stale(tmp_path, synthetic_omniglot, monkeypatch):
    root, cache = copy_data(synthetic_omniglot, tmp_path), tmp_path / "cache"
    assert loaded(synthetic_omniglot, cache, root=root).splits["train"].images.any()  # built for real
    moved = tmp_path / "moved"
    root.rename(moved)
    calls: list = []
    monkeypatch.setattr(omniglot, "build", fake_build(calls))
    assert loaded(synthetic_omniglot, cache, root=moved).splits["train"].images.any()  # the cache follows its data
    assert calls == []
    # A corrupt cache file is rebuilt.
    tensor = cache / "omniglot-28" / "images.pt"
    data = bytearray(tensor.read_bytes())
    data[-100] ^= 0xFF
    tensor.write_bytes(bytes(data))
    assert not loaded(synthetic_omniglot, cache, root=moved).splits["train"].images.any()
    assert calls == [28]
    # So is one whose source changed: one drawing replaced by another.
    archive = moved / "images_background.zip"
    with zipfile.ZipFile(archive) as z:
        replacement = z.read(FIRST.replace("_01.png", "_02.png"))
    rezip(archive, archive, {FIRST: replacement})
    loaded(synthetic_omniglot, cache, root=moved)
    assert calls == [28, 28]
    loaded(synthetic_omniglot, cache, root=moved)  # and then fresh again
    assert calls == [28, 28]


def test_extracted_folder_in_the_torchvision_layout_reads_like_the_archive(tmp_path, synthetic_omniglot):
    name, layout = "images_evaluation", tmp_path / "omniglot-py"
    with zipfile.ZipFile(synthetic_omniglot.data / f"{name}.zip") as z:
        z.extractall(layout)
    shutil.copy(synthetic_omniglot.data / "images_background.zip", layout)  # one archive, one folder: both forms
    assert omniglot.locate(tmp_path) == {"images_background": layout / "images_background.zip", name: layout / name}
    from_folder = omniglot.listing(name, layout / name)
    assert from_folder == omniglot.listing(name, synthetic_omniglot.data / f"{name}.zip")
    omniglot.verify(name, layout / name, from_folder, official=False)
    member = from_folder["Angelic/character01"][0]
    with zipfile.ZipFile(synthetic_omniglot.data / f"{name}.zip") as z:
        assert omniglot._reader(layout / name)(member) == z.read(member)
    from_archives = loaded(synthetic_omniglot, tmp_path / "cache")
    assert torch.equal(loaded(synthetic_omniglot, tmp_path / "cache2", root=tmp_path).splits["test"].images,
                       from_archives.splits["test"].images)


def test_archives_packed_differently_list_the_same(tmp_path, synthetic_omniglot):
    """Other packings of the release (extra entries, other compression) hold the same content."""
    original = synthetic_omniglot.data / "images_background.zip"
    packed = tmp_path / "images_background.zip"
    rezip(original, packed, {})  # stored instead of deflated
    with zipfile.ZipFile(packed, "a") as z:
        z.writestr("__MACOSX/images_background/._Latin", b"junk")
        z.writestr("images_background/.DS_Store", b"junk")
        z.writestr("images_background/Latin/character01/._0007_01.png.txt", b"junk")
    listed = omniglot.listing("images_background", packed)
    assert listed == omniglot.listing("images_background", original)
    omniglot.verify("images_background", packed, listed, official=False)


def bad(tmp_path: Path, synthetic_omniglot, match: str, root: Path | None = None, **settings) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=match):
        loaded(synthetic_omniglot, cache, root=root or tmp_path / "data", **settings)
    assert not list(cache.rglob(MANIFEST)) and not list(cache.rglob("images.pt"))


def test_missing_root(tmp_path, synthetic_omniglot):
    bad(tmp_path, synthetic_omniglot, r"`data.root=.*nowhere` does not exist.*`metarun-data omniglot`.*"
                                      r"brendenlake/omniglot", root=tmp_path / "nowhere")


def test_empty_folder(tmp_path, synthetic_omniglot):
    (tmp_path / "data").mkdir()
    bad(tmp_path, synthetic_omniglot, r"has no images_background or images_evaluation.*omniglot-py")


def with_background(tmp_path: Path, synthetic_omniglot, changes: dict | None = None, cut: int | None = None) -> None:
    """data/ with the synthetic evaluation archive and a changed (or cut-short) background archive."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(synthetic_omniglot.data / "images_evaluation.zip", root)
    original = synthetic_omniglot.data / "images_background.zip"
    if cut is not None:
        (root / "images_background.zip").write_bytes(original.read_bytes()[:cut])
    else:
        rezip(original, root / "images_background.zip", changes or {})


def test_truncated_archive(tmp_path, synthetic_omniglot):
    with_background(tmp_path, synthetic_omniglot, cut=20_000)
    bad(tmp_path, synthetic_omniglot, r"images_background.zip is not a readable zip archive.*truncated or corrupt")


def test_corrupt_png_names_the_file(tmp_path, synthetic_omniglot):
    with_background(tmp_path, synthetic_omniglot, {FIRST: b"\x89PNG\r\n\x1a\n not really"})
    bad(tmp_path, synthetic_omniglot, r"0001_01.png is not a readable PNG")


def test_missing_drawing_is_reported(tmp_path, synthetic_omniglot):
    with_background(tmp_path, synthetic_omniglot, {FIRST: None})
    bad(tmp_path, synthetic_omniglot,
        r"1 characters do not have 20 drawings \(e.g. Alphabet_of_the_Magi/character01 has 19\)")


def test_split_file_naming_an_unknown_character(tmp_path, synthetic_omniglot):
    splits = write_splits(tmp_path / "splits", "vinyals", {"test": ["Klingon/character01"]})
    bad(tmp_path, synthetic_omniglot,
        r"test.txt names 1 character\(s\) that are not in the data \(e.g. 'Klingon/character01'\)",
        root=synthetic_omniglot.data, split_dir=str(splits))


def test_episodes_the_data_cannot_supply(tmp_path, synthetic_omniglot):
    data = synthetic_omniglot.data
    bad(tmp_path, synthetic_omniglot, r"`ways=13` asks for more classes.*val split has \(12\)", root=data,
        episodes={"ways": 13})
    bad(tmp_path, synthetic_omniglot, r"`shots=5` \+ `queries=16` = 21 images per class.*20 images", root=data,
        episodes={"test": (5, 16)})
    bad(tmp_path, synthetic_omniglot, r"`train.shots=10` \+ `train.queries=15`", root=data,
        episodes={"train": (10, 15)})


def test_the_validation_split_limits_ways_only_when_the_run_validates(tmp_path, synthetic_omniglot):
    # One more test character: 16 test classes, 12 validation classes, 60 training classes.
    splits = write_splits(tmp_path / "splits", "vinyals", {"test": ["Angelic/character01"]})
    source = Omniglot("omniglot", str(synthetic_omniglot.data), str(tmp_path), split_dir=str(splits))
    wide = {**EPISODES, "ways": 13}
    source.setup(CPU, **wide, validate=False)
    assert classes(source) == {"train": 60, "val": 12, "test": 16}
    with pytest.raises(DataError, match=r"`ways=13`.*val split has \(12\)"):
        source.setup(CPU, **wide)
