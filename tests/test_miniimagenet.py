"""miniImageNet loader: both real layouts (images/ JPEGs and the cache pickles) on a few real split rows."""

from __future__ import annotations

import csv
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarun.data import miniimagenet
from metarun.data.cache import MANIFEST, DataError
from metarun.data.miniimagenet import MiniImageNet
from metarun.data.splits import PACKAGED

CLASSES, PER_CLASS, SIZE = 5, 6, 84
CPU = torch.device("cpu")


def real_rows(split: str) -> list[list[str]]:
    """The first CLASSES classes x PER_CLASS rows of a packaged split CSV, in file order."""
    with open(PACKAGED / "miniimagenet" / f"{split}.csv", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        taken: dict[str, list[str]] = {}
        for filename, label in reader:
            if label not in taken and len(taken) == CLASSES:
                break
            if len(taken.setdefault(label, [])) < PER_CLASS:
                taken[label].append(filename)
    return [[name, label] for label, names in taken.items() for name in names]


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, str] = ("filename", "label")) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([list(header), *rows])


def write_jpeg(path: Path, rng: np.random.Generator, shape: tuple[int, int] = (SIZE, SIZE)) -> None:
    # A smooth gradient plus noise, so the JPEG round trip is lossy, as with real photographs.
    h, w = shape
    ramp = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None]
    pixels = np.clip(ramp + rng.integers(0, 56, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path, quality=90)


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


def write_pickle(path: Path, rows: list[list[str]], images: Path) -> None:
    """The cache-pickle layout, its image_data stored back to front so that class_dict's indices matter."""
    data = np.stack([decoded(images / name) for name, _ in rows])[::-1].copy()
    class_dict: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(rows):
        class_dict.setdefault(label, []).append(len(rows) - 1 - i)
    with open(path, "wb") as f:
        pickle.dump({"image_data": data, "class_dict": class_dict}, f)


class Data:
    """A split_dir with real rows, and two roots: `folder` (images/) and `pickles` (the .pkl caches)."""

    def __init__(self, base: Path) -> None:
        self.split_dir, self.folder, self.pickles = base / "splits", base / "folder", base / "pickles"
        self.cache = base / "cache"
        for d in (self.split_dir, self.folder / "images", self.pickles):
            d.mkdir(parents=True)
        rng = np.random.default_rng(0)
        self.rows = {split: real_rows(split) for split in ("train", "val", "test")}
        for split, rows in self.rows.items():
            write_csv(self.split_dir / f"{split}.csv", rows)
            for name, _ in rows:
                write_jpeg(self.folder / "images" / name, rng)
            write_pickle(self.pickles / f"mini-imagenet-cache-{split}.pkl", rows, self.folder / "images")

    def source(self, root: Path | None = None) -> MiniImageNet:
        return MiniImageNet("miniimagenet", str(root or self.folder), str(self.cache), split_dir=str(self.split_dir))

    def setup(self, root: Path | None = None, ways: int = 5, train=(1, 1), test=(1, 2)) -> MiniImageNet:
        source = self.source(root)
        source.setup(CPU, ways, train, test)
        return source

    def no_cache(self) -> bool:
        return not list(self.cache.rglob(MANIFEST))


@pytest.fixture
def data(tmp_path) -> Data:
    return Data(tmp_path)


def test_folder_and_pickle_forms_load_the_same_tensors(data):
    from_folder, from_pickle = data.setup(data.folder), data.setup(data.pickles)
    for split, rows in data.rows.items():
        images = from_folder.splits[split].images
        assert images.shape == (CLASSES, PER_CLASS, 3, SIZE, SIZE) and images.dtype == torch.uint8
        assert torch.equal(images, from_pickle.splits[split].images)
        labels = list(dict.fromkeys(label for _, label in rows))
        for c, label in enumerate(labels):
            files = [name for name, lab in rows if lab == label]
            for j, name in enumerate(files):
                expected = torch.from_numpy(decoded(data.folder / "images" / name)).permute(2, 0, 1)
                assert torch.equal(images[c, j], expected), (split, label, name)
    assert from_folder.record()["forms"] == dict.fromkeys(data.rows, "images")
    assert from_pickle.record() == {"train_classes": 5, "val_classes": 5, "test_classes": 5, "image_size": SIZE,
                                    "forms": dict.fromkeys(data.rows, "pickle")}


def test_larger_images_are_resized(data):
    name = data.rows["val"][7][0]
    path = data.folder / "images" / name
    write_jpeg(path, np.random.default_rng(1), shape=(100, 120))
    images = data.setup().splits["val"].images
    assert images.shape == (CLASSES, PER_CLASS, 3, SIZE, SIZE)
    with Image.open(path) as image:
        assert image.size == (120, 100)
        small = np.array(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    assert torch.equal(images[1, 1], torch.from_numpy(small).permute(2, 0, 1))


def test_both_forms_resize_alike_to_another_image_size(data):
    sources = [MiniImageNet("miniimagenet", str(root), str(data.cache), image_size=42, split_dir=str(data.split_dir))
               for root in (data.folder, data.pickles)]
    for source in sources:
        source.setup(CPU, 5, (1, 1), (1, 2))
    images = [source.splits["train"].images for source in sources]
    assert images[0].shape == (CLASSES, PER_CLASS, 3, 42, 42)
    assert torch.equal(*images)
    assert (data.cache / "miniimagenet-42-train" / MANIFEST).is_file()


def test_episodes_sample_from_the_loaded_data(data):
    source = data.setup(data.pickles)
    episode = source.sample("test", 4, 5, 1, 2, torch.Generator().manual_seed(0))
    assert episode.support_x.shape == (4, 5, 3, SIZE, SIZE) and episode.support_x.dtype == torch.float32
    assert episode.query_x.shape == (4, 10, 3, SIZE, SIZE)
    assert 0 <= episode.support_x.min() and episode.support_x.max() <= 1
    assert sorted(episode.support_y[0].tolist()) == [0, 1, 2, 3, 4]
    assert sorted(episode.query_y[0].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # Every support image is one of the test split's images, scaled to [0, 1].
    pool = source.splits["test"].images.flatten(0, 1).float() / 255
    for image in episode.support_x[0]:
        assert any(torch.equal(image, p) for p in pool)


def test_cache_is_reused_and_rebuilt_when_an_image_changes(data, monkeypatch):
    first = data.setup()
    manifest = data.cache / f"miniimagenet-{SIZE}-train" / MANIFEST
    stamp = manifest.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cache that was up to date")

    with monkeypatch.context() as m:
        m.setattr(miniimagenet, "build", fail)
        again = data.setup()
    assert manifest.stat().st_mtime_ns == stamp
    assert all(torch.equal(first.splits[s].images, again.splits[s].images) for s in data.rows)

    name = data.rows["train"][0][0]
    path = data.folder / "images" / name
    write_jpeg(path, np.random.default_rng(2))
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even where the clock is coarse
    rebuilt = data.setup()
    expected = torch.from_numpy(decoded(path)).permute(2, 0, 1)
    assert torch.equal(rebuilt.splits["train"].images[0, 0], expected)
    assert not torch.equal(first.splits["train"].images[0, 0], expected)


def test_missing_root(data, tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(f"`data.root={root}` does not exist")):
        data.setup(root)
    assert data.no_cache()


def test_root_with_neither_layout(data, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataError, match=re.escape(f"`data.root={root}` has neither")) as error:
        data.setup(root)
    message = str(error.value)
    assert "mini-imagenet-cache-train.pkl" in message and "images/" in message and "\n" not in message
    assert data.no_cache()


def test_corrupt_jpeg_names_the_file(data):
    path = data.folder / "images" / data.rows["test"][-1][0]
    path.write_bytes(path.read_bytes()[:200])  # truncated mid-scan, as an interrupted copy leaves it
    with pytest.raises(DataError, match=re.escape(str(path))):
        data.setup()
    assert data.no_cache()


def test_missing_jpeg_names_the_file(data):
    path = data.folder / "images" / data.rows["val"][3][0]
    path.unlink()
    with pytest.raises(DataError, match=re.escape(f"{path} does not exist")):
        data.setup()
    assert data.no_cache()


def test_csv_with_wrong_columns(data):
    path = data.split_dir / "train.csv"
    write_csv(path, data.rows["train"], header=("file", "class"))
    with pytest.raises(DataError, match=re.escape(f"the split file {path} has columns ['file', 'class']")):
        data.setup()
    assert data.no_cache()


def test_classes_of_different_sizes(data):
    path = data.split_dir / "val.csv"
    write_csv(path, data.rows["val"][:-1])
    with pytest.raises(DataError, match=re.escape(f"the split file {path} has classes of different sizes")):
        data.setup()
    assert data.no_cache()


def test_pickle_missing_a_class(data):
    path = data.pickles / "mini-imagenet-cache-val.pkl"
    with open(path, "rb") as f:
        contents = pickle.load(f)
    dropped = data.rows["val"][-1][1]
    del contents["class_dict"][dropped]
    with open(path, "wb") as f:
        pickle.dump(contents, f)
    with pytest.raises(DataError, match=re.escape(f"{path} does not hold the split file's classes")) as error:
        data.setup(data.pickles)
    assert dropped in str(error.value)
    assert data.no_cache()


def test_pickle_with_a_short_class(data):
    path = data.pickles / "mini-imagenet-cache-test.pkl"
    with open(path, "rb") as f:
        contents = pickle.load(f)
    label = data.rows["test"][0][1]
    contents["class_dict"][label].pop()
    with open(path, "wb") as f:
        pickle.dump(contents, f)
    with pytest.raises(DataError, match=re.escape(f"{path} has {PER_CLASS - 1} images of class {label}")):
        data.setup(data.pickles)
    assert data.no_cache()


@pytest.mark.parametrize("contents", [b"not a pickle", pickle.dumps({"image_data": np.zeros((1, 84, 84, 3))}),
                                      pickle.dumps({"image_data": Path("x"), "class_dict": {}})])
def test_unreadable_pickle_names_the_file(data, contents):
    path = data.pickles / "mini-imagenet-cache-test.pkl"
    path.write_bytes(contents)
    with pytest.raises(DataError, match=re.escape(str(path))):
        data.setup(data.pickles)
    assert data.no_cache()


def test_ways_larger_than_the_classes(data):
    with pytest.raises(DataError, match=re.escape("`ways=6`")):
        data.setup(ways=6)
    assert data.no_cache()


def test_shots_and_queries_larger_than_per_class(data):
    with pytest.raises(DataError, match=re.escape("`shots=3` + `queries=4`")):
        data.setup(test=(3, 4))
    assert data.no_cache()


def test_channels_must_be_three(data):
    with pytest.raises(DataError, match=re.escape("`data.channels=1`")):
        MiniImageNet("miniimagenet", str(data.folder), str(data.cache), channels=1).setup(CPU, 5, (1, 1), (1, 1))
