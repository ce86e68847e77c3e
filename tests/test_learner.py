"""`metarun.load`: a finished run's model adapts and predicts from Python as the run's own test did."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import metarun
from metarun.run.learner import LearnerError

ALGOS = ["maml", "fomaml", "reptile", "imaml", "convex_maml", "convex_imaml", "cavia", "anil", "meta_sgd", "maml_pp"]
TINY = ["train.iterations=2", "train.meta_batch=2", "eval.tasks=5", "eval.chunk=3", "eval.val_tasks=0",
        "device=cpu"]


def trained(forker, folder: Path, *overrides: str) -> Path:
    out = forker.run(*TINY, *overrides, f"hydra.run.dir={folder}")
    assert out.returncode == 0, out.stderr
    return folder


def scores_csv(folder: Path) -> list[float]:
    with open(folder / "scores.csv") as f:
        return [float(row["score"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(forker, tmp_path_factory):
    """One tiny sine run per algorithm, tested task by task (exec.mode=loop)."""
    root = tmp_path_factory.mktemp("learner-runs")
    return {a: trained(forker, root / a, f"algo={a}", "exec.mode=loop") for a in ALGOS}


@pytest.mark.parametrize("algo", ALGOS)
def test_adapt_and_predict_give_the_runs_test_scores(runs, algo, one_thread):
    # Equal to the last bit because this process computes as the run's did: the same device, mode and number of
    # threads (one, as the `forker` runs; float32 sums split over threads add in another order).
    learner = metarun.load(runs[algo], device="cpu")
    assert learner.iteration == 2 and learner.parts.algo.name == algo
    mine = []
    for episode in learner.test_stream():
        for sx, sy, qx, qy in zip(*episode, strict=True):
            prediction = learner.adapt(sx, sy).predict(qx)
            assert prediction.shape == qy.shape
            mine.append(learner.parts.source.score(prediction[None], qy[None]).item())
    assert mine == scores_csv(runs[algo])  # exactly: the run's own adaptation, in the same mode and device
    assert learner.evaluate(learner.test_stream()).tolist() == scores_csv(runs[algo])


def test_evaluate_gives_the_runs_scores_in_vmap_mode(forker, tmp_path, one_thread):
    folder = trained(forker, tmp_path / "run", "exec.mode=vmap")
    learner = metarun.load(folder, device="cpu")
    assert learner.parts.executor.mode == "vmap"
    assert learner.evaluate(learner.test_stream()).tolist() == scores_csv(folder)


def test_more_adaptation_steps_change_the_predictions(runs):
    learner = metarun.load(runs["maml"], device="cpu")
    sx, sy, qx, _ = (t[0] for t in next(learner.test_stream()))
    assert not torch.equal(learner.adapt(sx, sy, steps=0).predict(qx), learner.adapt(sx, sy).predict(qx))
    assert torch.equal(learner.adapt(sx, sy, steps=0).predict(qx), learner.parts.objective.predict(
        learner.parts.theta(), qx))


@pytest.fixture(scope="module")
def image_run(forker, tmp_path_factory, synthetic_omniglot):
    root = tmp_path_factory.mktemp("learner-image")
    return trained(forker, root / "run", "data=omniglot", f"data.root={synthetic_omniglot.data}",
                   f"data.split_dir={synthetic_omniglot.splits['vinyals']}",
                   f"data.cache_dir={root / 'cache'}", "ways=3", "shots=1", "queries=2", "train.queries=2",
                   "model.filters=8")


def test_image_run_adapts_prepared_drawings(image_run, one_thread):
    learner = metarun.load(image_run, device="cpu")
    drawings = np.zeros((3, 105, 105), dtype=np.uint8)
    for i in range(3):
        drawings[i, 20 + 20 * i:40 + 20 * i, 10:90] = 255  # a bar at another height for each class
    x = learner.prepare(drawings)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # Resizing rounds a drawing and its negative apart by at most one level.
    assert torch.allclose(learner.prepare(255 - drawings, invert=True), x, atol=1.01 / 255)
    from PIL import Image

    assert torch.equal(learner.prepare([Image.fromarray(d) for d in drawings]), x)
    logits = learner.adapt(x, torch.arange(3)).predict(x)
    assert logits.shape == (3, 3)
    mine = []
    for episode in learner.test_stream():
        for sx, sy, qx, qy in zip(*episode, strict=True):
            mine.append(learner.parts.source.score(learner.adapt(sx, sy).predict(qx)[None], qy[None]).item())
    assert learner.evaluate(learner.test_stream()).tolist() == scores_csv(image_run)


@pytest.mark.parametrize(("call", "phrases"), [
    (lambda m, x, y: m.adapt(x * 255, y), ["values in [0, 255]", "pixels in [0, 1]", "learner.prepare"]),
    (lambda m, x, y: m.adapt((x * 255).to(torch.uint8), y), ["float32 tensor of shape [N, 1, 28, 28]", "torch.uint8"]),
    (lambda m, x, y: m.adapt(x[:, :, :20], y), ["shape [3, 1, 20, 28]", "takes [N, 1, 28, 28]"]),
    (lambda m, x, y: m.adapt(x, y + 1), ["labels (one per support image) in 0..2", "3-way", "values 1 to 3"]),
    (lambda m, x, y: m.adapt(x, y.float()), ["integer tensor of 3 labels", "torch.float32"]),
    (lambda m, x, y: m.adapt(x, y).predict(x.double()), ["`query_x` must be a float32 tensor", "torch.float64"]),
    (lambda m, x, y: m.prepare(np.zeros((2, 28, 28))), ["uint8 arrays", "float64"]),
])
def test_bad_inputs_are_said_in_one_paragraph(image_run, call, phrases):
    learner = metarun.load(image_run, device="cpu")
    x = learner.prepare(np.stack([np.eye(28, dtype=np.uint8) * 255] * 3))
    with pytest.raises(LearnerError) as e:
        call(learner, x, torch.arange(3))
    assert all(p in str(e.value) for p in phrases), str(e.value)
    assert "\n" not in str(e.value)


def test_regression_targets_must_be_a_column(runs):
    learner = metarun.load(runs["maml"], device="cpu")
    with pytest.raises(LearnerError, match=r"float32 tensor of shape \[4, 1\]"):
        learner.adapt(torch.zeros(4, 1), torch.zeros(4))


def test_folder_without_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LearnerError, match="holds no checkpoint.pt"):
        metarun.load(tmp_path / "empty")
    with pytest.raises(LearnerError, match="is not a folder"):
        metarun.load(tmp_path / "nowhere")


def test_best_without_best_pt(runs):
    with pytest.raises(LearnerError, match="holds no best.pt.*eval.select=best"):
        metarun.load(runs["maml"], select="best")


def test_checkpoint_of_a_newer_format(runs, tmp_path):
    folder = shutil.copytree(runs["maml"], tmp_path / "run")
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    torch.save({**state, "format": 99}, folder / "checkpoint.pt")
    with pytest.raises(LearnerError, match="checkpoint format 99 by a newer metarun.*Upgrade metarun"):
        metarun.load(folder)


def test_half_written_checkpoint(runs, tmp_path):
    folder = shutil.copytree(runs["maml"], tmp_path / "run")
    data = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(LearnerError, match="cannot be read as a metarun checkpoint: it is cut short"):
        metarun.load(folder)


@pytest.mark.cuda
def test_a_cpu_run_adapts_and_predicts_on_a_gpu(image_run):
    on_gpu, on_cpu = metarun.load(image_run, device="cuda"), metarun.load(image_run, device="cpu")
    assert on_gpu.device.type == "cuda" and next(on_gpu.parts.model.parameters()).is_cuda
    x = on_cpu.prepare(np.stack([np.eye(28, dtype=np.uint8) * 255] * 3))  # CPU inputs go to the learner's device
    logits = on_gpu.adapt(x, torch.arange(3)).predict(x)
    assert logits.is_cuda
    torch.testing.assert_close(logits.cpu(), on_cpu.adapt(x, torch.arange(3)).predict(x), rtol=1e-4, atol=1e-4)
    gpu_scores = on_gpu.evaluate(on_gpu.test_stream())
    assert gpu_scores.device.type == "cpu" and len(gpu_scores) == len(scores_csv(image_run))
