"""The real Omniglot release (METARUN_DATA/omniglot, else ../shared/data/omniglot): its counts, both packaged
splits' sizes, rotations, decoding, and a short real run of every algorithm. Without the data these tests skip,
saying where they looked; with METARUN_REQUIRE_DATA=1 (CI) they fail instead (tests/conftest.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from metarun.config.checks import ALGORITHMS
from metarun.config.store import config_dir, register
from metarun.data import omniglot
from metarun.data.cache import MANIFEST
from metarun.data.omniglot import LAKE_VALIDATION, Omniglot
from metarun.data.splits import PACKAGED
from metarun.run.train import run

CPU = torch.device("cpu")
EPISODES = dict(ways=5, train=(1, 15), test=(1, 15))

register()


@pytest.fixture(scope="session")
def cache_dir(real_omniglot, tmp_path_factory) -> Path:
    """One real preprocessing pass for the whole session (about 6 s)."""
    folder = tmp_path_factory.mktemp("cache")
    Omniglot("omniglot", str(real_omniglot), str(folder)).setup(CPU, **EPISODES)
    return folder


def loaded(real_omniglot: Path, cache: Path, **settings) -> Omniglot:
    source = Omniglot("omniglot", str(real_omniglot), str(cache), **settings)
    source.setup(CPU, **EPISODES)
    return source


def classes(source: Omniglot) -> dict[str, int]:
    return {split: s.classes for split, s in source.splits.items()}


def test_counts_shapes_and_split_sizes(real_omniglot, cache_dir):
    manifest = json.loads((cache_dir / "omniglot-28" / MANIFEST).read_text())
    assert manifest["shape"] == [1623, 20, 1, 28, 28] and manifest["polarity"] == "ink=255,background=0"
    source = loaded(real_omniglot, cache_dir)
    shapes = {split: tuple(s.images.shape) for split, s in source.splits.items()}
    assert shapes == {"train": (4800, 20, 1, 28, 28), "val": (688, 20, 1, 28, 28), "test": (1692, 20, 1, 28, 28)}
    unrotated = loaded(real_omniglot, cache_dir, rotate_test=False, train_split="train")
    assert classes(unrotated) == {"train": 4112, "val": 172, "test": 423}
    assert unrotated.record()["rotate_test"] is False and unrotated.record()["split"] == "vinyals"


def test_lake_split_sizes(real_omniglot, cache_dir):
    lake = loaded(real_omniglot, cache_dir, split="lake")
    assert classes(lake) == {"train": 4 * 964, "val": 4 * 81, "test": 4 * 659}
    held_out = loaded(real_omniglot, cache_dir, split="lake", rotate_test=False, train_split="train")
    assert classes(held_out) == {"train": 4 * 883, "val": 81, "test": 659}
    assert held_out.record()["split"] == "lake" and held_out.record()["split_dir"] is None


def test_packaged_lake_files_are_the_release_sources(real_omniglot):
    """lake/: trainval = every background character, test = every evaluation character, val = the characters of
    the five held-out background alphabets; and Vinyals' trainval + test is the whole release too."""
    listings = {name: omniglot.listing(name, real_omniglot / f"{name}.zip") for name in omniglot.SOURCES}
    lake = {stem: (PACKAGED / "omniglot" / "lake" / f"{stem}.txt").read_text().split()
            for stem in ("trainval", "train", "val", "test")}
    assert lake["trainval"] == sorted(listings["images_background"])
    assert lake["test"] == sorted(listings["images_evaluation"])
    assert {c.split("/")[0] for c in lake["val"]} == set(LAKE_VALIDATION) and len(lake["val"]) == 81
    assert lake["train"] == [c for c in lake["trainval"] if c not in set(lake["val"])]
    vinyals = {stem: (PACKAGED / "omniglot" / f"{stem}.txt").read_text().split() for stem in ("trainval", "test")}
    assert sorted(vinyals["trainval"] + vinyals["test"]) == sorted(lake["trainval"] + lake["test"])


def test_rotated_classes_are_exact_rotations(real_omniglot, cache_dir):
    train = loaded(real_omniglot, cache_dir).splits["train"].images
    base = train[:1200]
    for k in (1, 2, 3):
        assert torch.equal(train[1200 * k:1200 * (k + 1)], torch.rot90(base, k, dims=(-2, -1)))
    assert not torch.equal(train[1200:2400], base)


def test_first_training_class_is_its_drawings_resized_with_ink_bright(real_omniglot, cache_dir):
    first = (PACKAGED / "omniglot" / "trainval.txt").read_text().split()[0]
    with zipfile.ZipFile(real_omniglot / "images_evaluation.zip") as z:
        members = sorted(n for n in z.namelist() if n.startswith(f"images_evaluation/{first}/") and n.endswith(".png"))
        expected = [255 - np.asarray(Image.open(io.BytesIO(z.read(m))).convert("L").resize((28, 28), Image.LANCZOS))
                    for m in members]
    images = loaded(real_omniglot, cache_dir).splits["train"].images[0, :, 0]
    assert len(members) == 20 and torch.equal(images, torch.from_numpy(np.stack(expected)))
    assert (images[:, 0, 0] <= 2).all() and images.float().mean() < 60  # background dark, strokes bright


def compose_run(real_omniglot: Path, cache: Path, *overrides: str):
    base = ["data=omniglot", f"data.root={real_omniglot}", f"data.cache_dir={cache}", "device=cpu",
            "train.iterations=2", "train.meta_batch=2", "train.queries=2", "train.eval_every=0", "eval.tasks=4",
            "eval.val_tasks=2", "eval.chunk=4", "eval.steps=1"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[*base, *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_runs_on_real_omniglot(tmp_path, real_omniglot, cache_dir, algo):
    record, _ = run(compose_run(real_omniglot, cache_dir, f"algo={algo}"), tmp_path)
    assert record["metric"] == "accuracy" and 0 <= record["mean"] <= 1 and record["n_tasks"] == 4
    assert record["queries"] == 15 and record["eval_steps"] == 1 and record["bn_mode"] == "transductive"
    assert record["rotate_test"] is True and record["test_classes"] == 1692 and record["model"] == "Conv4"
    assert record["split"] == "vinyals"
    scores = (tmp_path / "scores.csv").read_text().splitlines()
    assert scores[0] == "task,score,score_before" and len(scores) == 5


def test_lake_split_is_recorded_in_results(tmp_path, real_omniglot, cache_dir):
    record, _ = run(compose_run(real_omniglot, cache_dir, "algo=fomaml", "data.split=lake",
                                "eval.transductive=false"), tmp_path)
    assert record["split"] == "lake" and record["test_classes"] == 4 * 659 and record["train_classes"] == 4 * 964
    assert record["bn_mode"] == "support-statistics"
    assert json.loads((tmp_path / "results.json").read_text())["split"] == "lake"


@pytest.mark.slow
def test_command_line_run_on_omniglot(tmp_path, real_omniglot, cache_dir, cli_env):
    env = {**cli_env, "METARUN_DATA": str(real_omniglot.parent), "METARUN_CACHE": str(cache_dir)}
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
