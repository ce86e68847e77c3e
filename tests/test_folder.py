"""`data=folder`: a user's own image folders (both layouts) on small synthetic folders the tests write: classes of
different sizes, grayscale and RGB, other image sizes, files that are not images, corrupt images, bad split CSVs,
classes too small, the cache, and two iterations of every algorithm."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from metarun.config.checks import ALGORITHMS
from metarun.config.store import config_dir, register
from metarun.core.tasks import ClassEpisodes, RaggedClassEpisodes
from metarun.data import folder as folder_module
from metarun.data.cache import MANIFEST, DataError
from metarun.data.folder import ImageFolder
from metarun.run.train import run
from synthetic import write_folder, write_image

CPU = torch.device("cpu")
SIZE = 8
# Unequal class sizes in every split; test is equal-sized (the fast path).
SIZES = {"train": {"ant": 4, "bee": 7, "cat": 5}, "val": {"dog": 3, "eel": 6}, "test": {"fox": 4, "gnu": 4}}

register()


@pytest.fixture
def root(tmp_path) -> Path:
    return write_folder(tmp_path / "images", SIZES)


def setup(root: Path, cache: Path, ways: int = 2, train=(1, 2), test=(1, 2), validate: bool = True,
          **settings) -> ImageFolder:
    source = ImageFolder("folder", str(root), str(cache), **{"image_size": SIZE, **settings})
    source.setup(CPU, ways, train, test, validate)
    return source


def expected(path: Path, channels: int = 3, size: int = SIZE) -> torch.Tensor:
    """[channels, size, size]: the file converted and Lanczos-resized by PIL."""
    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB" if channels == 3 else "L").resize((size, size), Image.LANCZOS))
    return torch.from_numpy(pixels.reshape(size, size, channels)).permute(2, 0, 1)


def no_cache(cache: Path) -> bool:
    return not list(cache.rglob(MANIFEST)) and not list(cache.rglob("images.pt"))


def test_split_folders_with_classes_of_different_sizes(root, tmp_path):
    source = setup(root, tmp_path / "cache")
    train, test = source.splits["train"], source.splits["test"]
    assert isinstance(train, RaggedClassEpisodes) and train.counts.tolist() == [4, 7, 5] and train.per_class == 4
    assert isinstance(test, ClassEpisodes) and test.images.shape == (2, 4, 3, SIZE, SIZE)  # equal sizes: fast path
    # Classes in name order, a class's images in name order, each the file resized.
    assert torch.equal(train.images[4], expected(root / "train/bee/000.png"))
    assert torch.equal(test.images[1, 3], expected(root / "test/gnu/003.png"))
    assert source.record() == {"train_classes": 3, "val_classes": 2, "test_classes": 2, "image_size": SIZE,
                               "channels": 3, "root": str(root), "layout": "split_folders", "train_images": 16,
                               "val_images": 9, "test_images": 8}
    episode = source.sample("train", 5, 2, 1, 3, torch.Generator().manual_seed(0))
    assert episode.support_x.shape == (5, 2, 3, SIZE, SIZE) and episode.query_x.shape == (5, 6, 3, SIZE, SIZE)


def test_class_folders_with_a_split_csv_read_like_split_folders(root, tmp_path, caplog):
    flat = tmp_path / "flat"
    for split, classes in SIZES.items():
        for name in classes:
            shutil.copytree(root / split / name, flat / name)
    shutil.copytree(root / "train" / "ant", flat / "yak")  # a class folder the CSV leaves out
    rows = [f"{name},{split}" for split, classes in SIZES.items() for name in classes]
    (flat / "split.csv").write_text("\n".join(["class,split", *rows]) + "\n")
    with caplog.at_level(logging.WARNING, logger="metarun.data.folder"):
        from_csv = setup(flat, tmp_path / "cache", split_csv="split.csv")
    assert "1 class folder(s) that split.csv does not name are left out (e.g. yak)" in caplog.text
    from_folders = setup(root, tmp_path / "cache")
    for split in SIZES:
        assert torch.equal(from_csv.splits[split].images, from_folders.splits[split].images)
    assert from_csv.record()["layout"] == "split_csv" and from_csv.record()["train_classes"] == 3


def test_grayscale_rgb_and_other_sizes(tmp_path):
    root = write_folder(tmp_path / "images", {"train": {"a": 3, "b": 3}, "test": {"c": 3, "d": 3}})
    rng = np.random.default_rng(5)
    gray, rgb_jpeg, wide = root / "train/a/000.png", root / "train/b/001.jpg", root / "test/c/002.png"
    write_image(gray, rng, mode="L")
    (root / "train/b/001.png").unlink()
    write_image(rgb_jpeg, rng, size=(30, 20))  # a JPEG of another size and shape
    (root / "test/c/002.png").unlink()
    write_image(wide, rng, size=(40, 9))
    for channels in (3, 1):
        source = setup(root, tmp_path / "cache", validate=False, channels=channels)
        train = source.splits["train"].images
        assert train.shape == (2, 3, channels, SIZE, SIZE)
        assert torch.equal(train[0, 0], expected(gray, channels)) and torch.equal(train[1, 1], expected(rgb_jpeg,
                                                                                                         channels))
        assert torch.equal(source.splits["test"].images[0, 2], expected(wide, channels))
    assert torch.equal(train[0, 0], expected(gray, 1))
    rgb_of_gray = setup(root, tmp_path / "cache", validate=False).splits["train"].images[0, 0]
    assert torch.equal(rgb_of_gray[0], rgb_of_gray[1]) and torch.equal(rgb_of_gray[1], rgb_of_gray[2])


def test_files_that_are_not_images_are_skipped_with_a_warning(root, tmp_path, caplog):
    (root / "train/ant/notes.txt").write_text("collected in 2024\n")
    (root / "train/bee/.DS_Store").write_bytes(b"\0\0")
    with caplog.at_level(logging.WARNING, logger="metarun.data.folder"):
        source = setup(root, tmp_path / "cache")
    assert "skipped 2 file(s) that are not images by their extension" in caplog.text and "notes.txt" in caplog.text
    assert source.splits["train"].counts.tolist() == [4, 7, 5]


def test_corrupt_jpeg_names_the_file(root, tmp_path):
    path = root / "val/eel/002.jpg"
    write_image(path, np.random.default_rng(0), size=(32, 32))
    path.write_bytes(path.read_bytes()[:100])  # cut short, as an interrupted copy leaves it
    with pytest.raises(DataError, match=re.escape(f"{path} is not a readable image") + r".*Delete or replace that"):
        setup(root, tmp_path / "cache")
    assert no_cache(tmp_path / "cache")


def test_a_class_too_small_for_the_episodes_is_refused_and_named(root, tmp_path):
    with pytest.raises(DataError, match=r"1 class\(es\) of the val split have fewer than the 5 images an episode "
                                        r"takes from each \(`shots` \+ `queries`\): dog \(3\)\. Such classes are "
                                        r"refused, not dropped.*lower `queries` \(or `shots`\) to fit the smallest"):
        setup(root, tmp_path / "cache", test=(1, 4))
    with pytest.raises(DataError, match=r"2 class\(es\) of the train split.*: ant \(4\), cat \(5\)\..*`train.queries`"):
        setup(root, tmp_path / "cache", train=(2, 4))
    assert no_cache(tmp_path / "cache")
    # Not validating, the val split's small class does not matter.
    assert setup(root, tmp_path / "cache", test=(1, 3), validate=False).splits.keys() == {"train", "test"}


def test_ways_beyond_a_split_classes(root, tmp_path):
    with pytest.raises(DataError, match=r"`ways=3` asks for more classes per task than the folder val split has "
                                        r"\(2\)"):
        setup(root, tmp_path / "cache", ways=3)
    assert no_cache(tmp_path / "cache")


@pytest.mark.parametrize(("csv", "message"), [
    ("class,split\nant,train\nzebra,test\n", "names 1 class(es) that have no folder in `data.root={root}` "
                                             "(e.g. 'zebra')"),
    ("name,fold\nant,train\n", "has columns ['name', 'fold']; expected ['class', 'split']"),
    ("class,split\nant,training\n", "the row 'ant,training' is not `class,split` with split train, val or test"),
    ("class,split\nant,train\nant,test\n", "or puts a class in two splits"),
])
def test_bad_split_csv(tmp_path, csv, message):
    root = write_folder(tmp_path / "images", {".": {"ant": 3, "bee": 3}})
    (root / "split.csv").write_text(csv)
    with pytest.raises(DataError, match=re.escape(message.format(root=root))):
        setup(root, tmp_path / "cache", split_csv=str(root / "split.csv"))
    assert no_cache(tmp_path / "cache")


def test_bad_layouts(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(f"`data.root={nowhere}` does not exist (expected either")):
        setup(nowhere, tmp_path / "cache")
    with pytest.raises(DataError, match=r"`data=folder` needs `data.root=PATH`"):
        ImageFolder("folder", None, str(tmp_path)).setup(CPU, 2, (1, 1), (1, 1))
    with pytest.raises(DataError, match=r"`data.channels=4` is unsupported"):
        setup(nowhere, tmp_path / "cache", channels=4)
    only_train = write_folder(tmp_path / "a", {"train": {"x": 3, "y": 3}})
    with pytest.raises(DataError, match=r"has no test/ folder \(expected either PATH/train/<class>/"):
        setup(only_train, tmp_path / "cache")
    no_val = write_folder(tmp_path / "b", {"train": {"x": 3, "y": 3}, "test": {"z": 3, "w": 3}})
    with pytest.raises(DataError, match=r"has no validation classes.*or set `eval.val_tasks=0`"):
        setup(no_val, tmp_path / "cache")
    setup(no_val, tmp_path / "cache", validate=False)
    supervised = write_folder(tmp_path / "c", {"train": {"x": 3, "y": 3}, "test": {"x": 3, "w": 3}})
    with pytest.raises(DataError, match=r"the class 'x' is in both train/ and test/\. Few-shot meta-testing needs "
                                        r"classes that meta-training never saw"):
        setup(supervised, tmp_path / "cache", validate=False)


def test_cache_is_reused_and_rebuilt_when_a_file_changes(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = setup(root, cache)
    (manifest,) = cache.rglob(MANIFEST)
    stamp = manifest.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cache that was up to date")

    with monkeypatch.context() as m:
        m.setattr(folder_module, "build", fail)
        again = setup(root, cache)
    assert manifest.stat().st_mtime_ns == stamp
    assert torch.equal(first.splits["train"].images, again.splits["train"].images)
    path = root / "train/ant/001.png"
    write_image(path, np.random.default_rng(9))
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even where the clock is coarse
    rebuilt = setup(root, cache)
    assert torch.equal(rebuilt.splits["train"].images[1], expected(path))
    assert not torch.equal(first.splits["train"].images[1], rebuilt.splits["train"].images[1])
    # A second dataset gets its own cache, so that two datasets never take turns rebuilding one.
    other = write_folder(tmp_path / "other", SIZES, seed=1)
    setup(other, cache)
    assert len(list(cache.rglob(MANIFEST))) == 2


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of 4 + 3 + 3 tiny classes of different sizes, and a cache shared by the runs."""
    base = tmp_path_factory.mktemp("folder-runs")
    sizes = {"train": {"a": 4, "b": 6, "c": 5, "d": 4}, "val": {"e": 4, "f": 5, "g": 4},
             "test": {"h": 4, "i": 7, "j": 4}}
    return write_folder(base / "images", sizes), base / "cache"


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_runs_two_iterations(tmp_path, tiny_folder, algo):
    root, cache = tiny_folder
    overrides = ["data=folder", f"data.root={root}", f"data.cache_dir={cache}", "data.image_size=16",
                 "data.channels=1", "model.filters=4", f"algo={algo}", "ways=2", "shots=1", "queries=2",
                 "device=cpu", "train.iterations=2", "train.meta_batch=2", "train.eval_every=0", "eval.tasks=4",
                 "eval.val_tasks=2", "eval.chunk=4", "eval.steps=1", "inner.steps=1"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.model.filters == 4 and cfg.model.downsample == "maxpool" and cfg.model.image_size == 16
    record, _ = run(cfg, tmp_path)
    assert record["data"] == "folder" and record["metric"] == "accuracy" and 0 <= record["mean"] <= 1
    assert record["n_tasks"] == 4 and record["train_classes"] == 4 and record["channels"] == 1
    assert record["layout"] == "split_folders" and record["train_images"] == 19
