"""A plain (non-editable) install finds its configs from any folder: they ship inside the wheel."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_wheel_ships_configs_and_runs_from_elsewhere(tmp_path, cli_env):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("metarun-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env | {"PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import metarun.config.store as c; print(c.__file__); print(c.config_dir())"],
        capture_output=True, text=True, env=env, cwd=elsewhere, timeout=60,
    )
    module_file, conf = where.stdout.split()
    assert module_file.startswith(str(site)) and conf == str(site / "metarun" / "conf")
    # The published splits ship too, so the image datasets need only the user's images.
    splits = site / "metarun" / "splits"
    assert len((splits / "omniglot" / "trainval.txt").read_text().split()) == 1200
    assert (splits / "miniimagenet" / "test.csv").read_text().count("\n") == 12001
    run = subprocess.run(
        [sys.executable, "-m", "metarun", "algo=fomaml", "weighting=agreement", "train.iterations=2",
         "train.meta_batch=2", "eval.tasks=4", "eval.val_tasks=0", "hydra.run.dir=run"],
        capture_output=True, text=True, env=env, cwd=elsewhere, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "run" / "results.json").is_file()
