"""`metarun-eval RUN_DIR [overrides]`: a finished run's parameters tested under another setting, no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_learner import scores_csv, trained


def image_run(forker, root: Path, synthetic_omniglot, *overrides: str) -> Path:
    return trained(forker, root / "run", *overrides, "data=omniglot", f"data.root={synthetic_omniglot.data}",
                   f"data.split_dir={synthetic_omniglot.splits['vinyals']}",
                   f"data.cache_dir={root / 'cache'}", "ways=3", "shots=1", "queries=2", "train.queries=2",
                   "model.filters=8", "eval.tasks=6")


@pytest.fixture(scope="module")
def run(forker, tmp_path_factory, synthetic_omniglot):
    """A tiny 3-way 1-shot Omniglot-shaped MAML run."""
    return image_run(forker, tmp_path_factory.mktemp("reevaluate"), synthetic_omniglot)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def evaluated(forker, run: Path, *overrides: str) -> dict:
    out = forker.run(str(run), *overrides, entry="eval")
    assert out.returncode == 0, out.stderr
    return out


def refused(forker, run: Path, *overrides: str) -> str:
    out = forker.run(str(run), *overrides, entry="eval")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("metarun-eval: error: "), out.stderr
    return lines[0]


def test_as_trained_repeats_the_runs_test(forker, run):
    evaluated(forker, run)
    again = run / "eval" / "as_trained"
    record, original = results(again), results(run)
    assert scores_csv(again) == scores_csv(run)
    assert record["mean"] == original["mean"] and record["n_tasks"] == original["n_tasks"] == 6
    assert record["evaluation_of"] == str(run) and record["checkpoint"] == "checkpoint.pt"
    assert record["checkpoint_iteration"] == 2 and record["train_seconds"] == original["train_seconds"]


def test_the_trained_setting_given_again_gives_the_same_scores(forker, run):
    evaluated(forker, run, "eval.steps=3")  # the run's own eval.steps (Omniglot's default)
    assert scores_csv(run / "eval" / "eval.steps=3") == scores_csv(run)
    evaluated(forker, run, "eval.steps=1")
    record = results(run / "eval" / "eval.steps=1")
    assert record["eval_steps"] == 1 and record["mean_before"] == results(run)["mean_before"]


def test_other_shots_keep_the_trained_settings(forker, run):
    evaluated(forker, run, "shots=2", "queries=1", "eval.tasks=4")
    record = results(run / "eval" / "eval.tasks=4,queries=1,shots=2")
    assert (record["shots"], record["queries"], record["n_tasks"]) == (2, 1, 4)
    assert (record["train_shots"], record["train_queries"]) == (1, 2)  # what the run trained on, not ${shots}


def test_another_number_of_classes_needs_a_zero_head(forker, run):
    said = refused(forker, run, "ways=2")
    assert "trained a 3-way head" in said and "eval.head=zero" in said
    assert not (run / "eval" / "ways=2").exists()
    evaluated(forker, run, "ways=2", "eval.head=zero")
    record = results(run / "eval" / "+eval.head=zero,ways=2")
    assert record["ways"] == 2 and record["head"] == "zero" and 0 <= record["mean"] <= 1


@pytest.mark.parametrize(("algo", "phrase"), [
    ("cavia", "algo=cavia adapts only its context vector"),
    ("meta_sgd", "algo=meta_sgd learned meta-parameters shaped like the trained head (algo.lr.head.weight"),
])
def test_a_zero_head_needs_an_inner_loop_that_fits_it(forker, tmp_path, synthetic_omniglot, algo, phrase):
    folder = image_run(forker, tmp_path, synthetic_omniglot, f"algo={algo}")
    assert phrase in refused(forker, folder, "ways=2", "eval.head=zero")


@pytest.mark.parametrize(("overrides", "phrase"), [
    (["model.filters=16"], "changes how the model was trained (model.filters)"),
    (["inner.lr=0.1"], "changes how the model was trained (inner.lr)"),
    (["data=sine"], "`data=sine` chooses a config group"),
    (["data.image_size=32"], "would change the trained model (model.image_size: 28 -> 32)"),
    (["eval.head=first"], "`eval.head=first` is unknown"),
    (["nosuchkey=1"], "nosuchkey"),
    (["eval.select=best"], "holds no best.pt: only runs trained with `eval.select=best`"),
])
def test_settings_of_the_trained_model_are_refused(forker, run, overrides, phrase):
    assert phrase in refused(forker, run, *overrides)


def test_folders_that_hold_no_finished_run(forker, tmp_path, run):
    assert "is not a metarun run folder" in refused(forker, tmp_path)
    unfinished = tmp_path / "unfinished"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "config.yaml").write_text((run / ".hydra" / "config.yaml").read_text())
    assert "has not finished" in refused(forker, unfinished)


def test_multirun_writes_one_folder_per_setting_and_tables_read_them(forker, run):
    out = evaluated(forker, run, "-m", "eval.steps=1,2")
    folders = [run / "eval" / f"eval.steps={s}" for s in (1, 2)]
    assert [results(f)["eval_steps"] for f in folders] == [1, 2], out.stdout
    table = forker.run(*map(str, folders), "--out", str(run / "tables"), entry="table")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("| maml") == 2


def test_the_same_evaluation_again_is_reported_not_repeated(forker, run):
    evaluated(forker, run, "eval.tasks=3")
    folder = run / "eval" / "eval.tasks=3"
    written = (folder / "results.json").stat().st_mtime_ns
    out = evaluated(forker, run, "eval.tasks=3")
    assert (folder / "results.json").stat().st_mtime_ns == written
    assert "results:" in out.stdout


def test_a_folder_whose_path_holds_equals_signs_and_commas(forker, run, tmp_path):
    # Every --seeds cell (CELL/seed=0) and every multirun job (algo=maml,seed=0) is such a folder.
    import shutil

    job = tmp_path / "sweep" / "algo=maml,seed=0" / "cell's seed=0"
    shutil.copytree(run, job, ignore=shutil.ignore_patterns("eval"))
    evaluated(forker, job, "eval.steps=1")
    assert results(job / "eval" / "eval.steps=1")["evaluation_of"] == str(job)
