"""Omniglot from the real archives in ../shared/data/omniglot: content, split, rotations, the
cache, bad input, and a short real run of every algorithm."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from metarun.cli import config_dir
from metarun.config import ALGORITHMS, register
from metarun.data import omniglot
from metarun.data.cache import MANIFEST, DataError
from metarun.data.omniglot import Omniglot
from metarun.train import run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "omniglot"
CPU = torch.device("cpu")
EPISODES = dict(ways=5, train=(1, 15), test=(1, 15))

register()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One real preprocessing pass for the whole session (about 15 s)."""
    if not (DATA / "images_background.zip").is_file():
        raise RuntimeError(f"these tests read the real Omniglot archives from {DATA}; see ../shared/data/README.md")
    folder = tmp_path_factory.mktemp("cache")
    Omniglot("omniglot", str(DATA), str(folder)).setup(CPU, **EPISODES)
    return folder


def loaded(cache: Path, root: Path = DATA, **settings) -> Omniglot:
    source = Omniglot("omniglot", str(root), str(cache), **settings)
    source.setup(CPU, **EPISODES)
    return source


def test_counts_shapes_and_split_sizes(cache_dir):
    manifest = json.loads((cache_dir / "omniglot-28" / MANIFEST).read_text())
    assert manifest["shape"] == [1623, 20, 1, 28, 28] and manifest["polarity"] == "ink=255,background=0"
    source = loaded(cache_dir)
    shapes = {split: tuple(s.images.shape) for split, s in source.splits.items()}
    assert shapes == {"train": (4800, 20, 1, 28, 28), "val": (688, 20, 1, 28, 28), "test": (1692, 20, 1, 28, 28)}
    unrotated = loaded(cache_dir, rotate_test=False, train_split="train")
    assert {s: x.classes for s, x in unrotated.splits.items()} == {"train": 4112, "val": 172, "test": 423}
    assert unrotated.record()["rotate_test"] is False


def test_rotated_classes_are_exact_rotations(cache_dir):
    train = loaded(cache_dir).splits["train"].images
    base = train[:1200]
    for k in (1, 2, 3):
        assert torch.equal(train[1200 * k:1200 * (k + 1)], torch.rot90(base, k, dims=(-2, -1)))
    assert not torch.equal(train[1200:2400], base)


def test_first_training_class_is_its_drawings_resized_with_ink_bright(cache_dir):
    first = (ROOT / "src/metarun/splits/omniglot/trainval.txt").read_text().split()[0]
    with zipfile.ZipFile(DATA / "images_evaluation.zip") as z:
        members = sorted(n for n in z.namelist() if n.startswith(f"images_evaluation/{first}/") and n.endswith(".png"))
        expected = [255 - np.asarray(Image.open(io.BytesIO(z.read(m))).convert("L").resize((28, 28), Image.LANCZOS))
                    for m in members]
    images = loaded(cache_dir).splits["train"].images[0, :, 0]
    assert len(members) == 20 and torch.equal(images, torch.from_numpy(np.stack(expected)))
    assert (images[:, 0, 0] <= 2).all() and images.float().mean() < 60  # background dark, strokes bright


def copy_data(tmp_path: Path, cache_dir: Path) -> tuple[Path, Path]:
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        shutil.copy(DATA / name, root / name)
    shutil.copytree(cache_dir, cache)
    return root, cache


def rezip(src: Path, dst: Path, changes: dict[str, bytes | None]) -> None:
    """A copy of an archive with some members replaced (bytes) or left out (None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = changes.get(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)


def fake_build(calls: list):
    def build(sources, listings, size):
        calls.append(size)
        return torch.zeros(1623, 20, 1, size, size, dtype=torch.uint8)
    return build


def test_cache_is_reused_when_fresh_and_rebuilt_when_stale(tmp_path, cache_dir, monkeypatch):
    root, cache = copy_data(tmp_path, cache_dir)
    calls: list = []
    monkeypatch.setattr(omniglot, "build", fake_build(calls))
    assert loaded(cache, root).splits["train"].images.any()  # the real cache, moved with its sources
    assert calls == []
    # A corrupt cache file is rebuilt.
    tensor = cache / "omniglot-28" / "images.pt"
    data = bytearray(tensor.read_bytes())
    data[-100] ^= 0xFF
    tensor.write_bytes(bytes(data))
    assert not loaded(cache, root).splits["train"].images.any()
    assert calls == [28]
    # So is one whose source changed: one drawing replaced by another.
    a, b = "images_evaluation/Angelic/character01/0965_01.png", "images_evaluation/Angelic/character01/0965_02.png"
    with zipfile.ZipFile(root / "images_evaluation.zip") as z:
        replacement = z.read(b)
    rezip(DATA / "images_evaluation.zip", root / "images_evaluation.zip", {a: replacement})
    loaded(cache, root)
    assert calls == [28, 28]
    loaded(cache, root)  # and then fresh again
    assert calls == [28, 28]


def test_extracted_folder_in_the_torchvision_layout_reads_like_the_archive(tmp_path):
    name, layout = "images_evaluation", tmp_path / "omniglot-py"
    with zipfile.ZipFile(DATA / f"{name}.zip") as z:
        z.extractall(layout)
    shutil.copy(DATA / "images_background.zip", layout)  # one archive, one folder: both forms at once
    assert omniglot.locate(tmp_path) == {"images_background": layout / "images_background.zip", name: layout / name}
    from_folder = omniglot.listing(name, layout / name)
    assert from_folder == omniglot.listing(name, DATA / f"{name}.zip")
    omniglot.verify(name, layout / name, from_folder)
    member = from_folder["Angelic/character01"][0]
    with zipfile.ZipFile(DATA / f"{name}.zip") as z:
        assert omniglot._reader(layout / name)(member) == z.read(member)


def bad(tmp_path: Path, match: str, root: Path | None = None, **settings) -> None:
    cache = tmp_path / "cache"
    episodes = {**EPISODES, **settings.pop("episodes", {})}
    with pytest.raises(DataError, match=match):
        Omniglot("omniglot", str(root or tmp_path / "data"), str(cache), **settings).setup(CPU, **episodes)
    assert not list(cache.rglob(MANIFEST)) and not list(cache.rglob("images.pt"))


def test_missing_root(tmp_path):
    bad(tmp_path, r"`data.root=.*nowhere` does not exist.*brendenlake/omniglot", root=tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    bad(tmp_path, r"has no images_background or images_evaluation.*omniglot-py")


def with_archives(tmp_path: Path, background: dict | None = None, truncate: bool = False) -> None:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(DATA / "images_evaluation.zip", root)
    if truncate:
        (root / "images_background.zip").write_bytes((DATA / "images_background.zip").read_bytes()[:1_000_000])
    else:
        rezip(DATA / "images_background.zip", root / "images_background.zip", background or {})


def test_truncated_archive(tmp_path):
    with_archives(tmp_path, truncate=True)
    bad(tmp_path, r"images_background.zip is not a readable zip archive.*truncated or corrupt")


FIRST = "images_background/Alphabet_of_the_Magi/character01/0709_01.png"


def test_corrupt_png_names_the_file(tmp_path):
    with_archives(tmp_path, {FIRST: b"\x89PNG\r\n\x1a\n not really"})
    bad(tmp_path, r"0709_01.png is not a readable PNG")


def test_missing_drawing_is_reported(tmp_path):
    with_archives(tmp_path, {FIRST: None})
    bad(tmp_path, r"1 characters do not have 20 drawings \(e.g. Alphabet_of_the_Magi/character01 has 19\)")


def test_split_file_naming_an_unknown_character(tmp_path):
    splits = tmp_path / "splits"
    shutil.copytree(ROOT / "src/metarun/splits/omniglot", splits)
    with open(splits / "test.txt", "a") as f:
        f.write("Klingon/character01\n")
    bad(tmp_path, r"test.txt names 1 character\(s\) that are not in the data \(e.g. 'Klingon/character01'\)",
        root=DATA, split_dir=str(splits))


def test_episodes_the_data_cannot_supply(tmp_path):
    bad(tmp_path, r"`ways=2000` asks for more classes.*val split has \(688\)", root=DATA,
        episodes={"ways": 2000})
    bad(tmp_path, r"`shots=5` \+ `queries=16` = 21 images per class.*20 images", root=DATA,
        episodes={"test": (5, 16)})
    bad(tmp_path, r"`train.shots=10` \+ `train.queries=15`", root=DATA, episodes={"train": (10, 15)})


def test_the_validation_split_limits_ways_only_when_the_run_validates(cache_dir):
    wide = {**EPISODES, "ways": 700}  # more than the 688 validation classes, fewer than train's and test's
    Omniglot("omniglot", str(DATA), str(cache_dir)).setup(CPU, **wide, validate=False)
    with pytest.raises(DataError, match=r"`ways=700`.*val split has \(688\)"):
        Omniglot("omniglot", str(DATA), str(cache_dir)).setup(CPU, **wide)


def compose_run(cache: Path, *overrides: str):
    base = ["data=omniglot", f"data.root={DATA}", f"data.cache_dir={cache}", "device=cpu", "train.iterations=2",
            "train.meta_batch=2", "train.queries=2", "train.eval_every=0", "eval.tasks=4", "eval.val_tasks=2",
            "eval.chunk=4", "eval.steps=1"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_runs_on_real_omniglot(tmp_path, cache_dir, algo):
    record, _ = run(compose_run(cache_dir, f"algo={algo}"), tmp_path)
    assert record["metric"] == "accuracy" and 0 <= record["mean"] <= 1 and record["n_tasks"] == 4
    assert record["queries"] == 15 and record["eval_steps"] == 1 and record["bn_mode"] == "transductive"
    assert record["rotate_test"] is True and record["test_classes"] == 1692 and record["model"] == "Conv4"
    scores = (tmp_path / "scores.csv").read_text().splitlines()
    assert scores[0] == "task,score,score_before" and len(scores) == 5


def test_non_transductive_evaluation_is_recorded(tmp_path, cache_dir):
    record, _ = run(compose_run(cache_dir, "algo=fomaml", "eval.transductive=false"), tmp_path)
    assert record["bn_mode"] == "support-statistics"


def test_command_line_run_on_omniglot(tmp_path, cache_dir, cli_env):
    env = {**cli_env, "METARUN_DATA": str(SHARED), "METARUN_CACHE": str(cache_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "metarun", "data=omniglot", "algo=reptile", "weighting=agreement", "device=cpu",
         "train.iterations=2", "train.meta_batch=3", "train.queries=1", "eval.tasks=6", "eval.val_tasks=0",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "omniglot 5-way 1-shot (accuracy %)" in out.stdout
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["data"] == "omniglot" and record["ways"] == 5 and record["train_queries"] == 1


def test_archives_packed_differently_list_the_same(tmp_path):
    """Other packings of the release (extra entries, other compression) hold the same content."""
    packed = tmp_path / "images_background.zip"
    rezip(DATA / "images_background.zip", packed, {})  # stored instead of deflated
    with zipfile.ZipFile(packed, "a") as z:
        z.writestr("__MACOSX/images_background/._Latin", b"junk")
        z.writestr("images_background/.DS_Store", b"junk")
        z.writestr("images_background/Latin/character01/._0989_01.png.txt", b"junk")
    listed = omniglot.listing("images_background", packed)
    assert listed == omniglot.listing("images_background", DATA / "images_background.zip")
    omniglot.verify("images_background", packed, listed)
