"""metarun-plot on real (tiny) runs: the figures are written, the sine figure's numbers are right,
and requests it cannot draw exit with 2 and a message naming the folder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from metarun.commands.plot import run_cli
from metarun.config.store import config_dir, register
from metarun.core.functional import detached
from metarun.report.plots import find_runs, logged_runs
from metarun.report.runs import read_metrics
from metarun.run import checkpoint
from metarun.run.build import build
from metarun.run.sine_figure import sine_figure_data
from metarun.run.train import run

register()

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["train.iterations=6", "train.meta_batch=3", "train.eval_every=3", "eval.tasks=4", "eval.val_tasks=2",
        "eval.chunk=4", "device=cpu"]


def config(weighting: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"weighting={weighting}"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A multirun-like folder: sweep/0 uniform, sweep/1 agreement, both trained for 6 iterations."""
    root = tmp_path_factory.mktemp("plots") / "sweep"
    for job, weighting in enumerate(("uniform", "agreement")):
        (root / str(job)).mkdir(parents=True)
        run(config(weighting), root / str(job))
    return root


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > len(PNG) and path.read_bytes()[:8] == PNG


def test_curves_and_weights_write_pngs(sweep, tmp_path, capsys):
    assert find_runs([sweep]) == [sweep / "0", sweep / "1"]
    assert run_cli(["curves", str(sweep), "--out", str(tmp_path)]) == 0
    assert run_cli(["weights", str(sweep), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("curves_loss.png", "curves_val.png", "weights.png"):
        assert is_png(tmp_path / name) and str(tmp_path / name) in out, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves_loss.png", "curves_val.png", "weights.png"]


def test_curves_default_to_the_first_folder_and_print_paths(sweep, capsys):
    assert run_cli(["curves", str(sweep / "0")]) == 0
    out = capsys.readouterr().out
    for name in ("curves_loss.png", "curves_val.png"):
        assert is_png(sweep / "0" / name) and str(sweep / "0" / name) in out


def test_run_labels_from_results_or_overrides(sweep, tmp_path):
    assert [r.label for r in logged_runs([sweep / "0", sweep / "1"])] == ["maml + uniform, seed 0",
                                                                            "maml + agreement, seed 0"]
    # A run still going has no results.json yet: its Hydra overrides name it.
    going = tmp_path / "going"
    (going / ".hydra").mkdir(parents=True)
    shutil.copy(sweep / "1" / "metrics.csv", going / "metrics.csv")
    (going / ".hydra" / "overrides.yaml").write_text("- algo=reptile\n- weighting=agreement\n")
    assert [r.label for r in logged_runs([going])] == ["algo=reptile weighting=agreement (unfinished)"]
    # Its log may stop mid-line; that line is left out rather than read as a truncated number.
    complete = read_metrics(going)
    with open(going / "metrics.csv", "a") as log:
        log.write("7,2.5,0.")
    assert read_metrics(going).equals(complete)
    assert run_cli(["weights", str(going)]) == 0 and is_png(going / "weights.png")


def test_sine_writes_its_figure(sweep, tmp_path, capsys):
    assert run_cli(["sine", str(sweep / "0"), str(sweep / "1"), "--out", str(tmp_path), "--steps", "2"]) == 0
    assert is_png(tmp_path / "sine.png")
    assert str(tmp_path / "sine.png") in capsys.readouterr().out


def test_sine_figure_data(sweep):
    uniform, agreement = checkpoint.load(sweep / "0"), checkpoint.load(sweep / "1")
    data = sine_figure_data(uniform, agreement, task_seed=3)
    assert data.steps == uniform["config"]["eval"]["steps"] and data.lr == uniform["config"]["eval"]["lr"]
    assert data.x[0] == -5.0 and data.x[-1] == 5.0 and len(data.support_x) == 10
    # The true curve goes through the task's support points.
    assert np.allclose(np.interp(data.support_x, data.x, data.y_true), data.support_y, atol=0.05)

    # "untrained" is a freshly built model of the same config (same seed), adapted on the same task.
    parts = build(config("uniform"))
    source, model, algo, objective = parts.source, parts.model, parts.algo, parts.objective
    task = source.sample("test", 1, 1, 10, 10, torch.Generator().manual_seed(3))
    sx, sy = task.support_x[0], task.support_y[0]
    assert np.allclose(sx.reshape(-1).numpy(), data.support_x)
    grid = torch.linspace(-5, 5, len(data.x)).unsqueeze(1)
    fresh = algo.predict(detached(model), objective, sx, sy, grid, data.steps, data.lr).reshape(-1).numpy()
    np.testing.assert_allclose(data.predictions["untrained"], fresh, rtol=0, atol=1e-6)
    # Training moved both runs away from the initialisation.
    for role in ("uniform", "agreement"):
        assert np.abs(data.predictions[role] - fresh).max() > 1e-4, role


def test_no_runs_or_no_folder_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("curves", "weights"):
        assert run_cli([command, str(empty)]) == 2
        err = capsys.readouterr().err
        assert f"no runs under {empty}" in err and "Traceback" not in err
    assert run_cli(["curves", str(tmp_path / "absent")]) == 2
    assert f"no such folder: {tmp_path / 'absent'}" in capsys.readouterr().err


def test_sine_refuses_runs_without_checkpoint_or_not_sine(sweep, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert run_cli(["sine", str(bare), str(sweep / "1")]) == 2
    assert f"{bare} has no checkpoint.pt" in capsys.readouterr().err
    omniglot = tmp_path / "omniglot"
    omniglot.mkdir()
    checkpoint.save(omniglot, {"params": {}, "config": {"data": {"name": "omniglot"}}})
    assert run_cli(["sine", str(sweep / "0"), str(omniglot)]) == 2
    assert f"{omniglot} is not a sine run" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert run_cli(["curves", str(sweep)]) == 2
    assert 'pip install "metarun[plot]"' in capsys.readouterr().err
