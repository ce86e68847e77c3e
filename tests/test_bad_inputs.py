"""A catalogue of bad inputs, each given to the `metarun` (or `metarun-table`) command as a user would.

Every case asserts the answer: a non-zero exit code, one paragraph (`metarun: error: ...`, the last
thing printed, no traceback) that names the setting or file and the fix, and nothing partial left
behind: no run folder for a run that never started, no results.json or scores.csv, no cache file, an
existing checkpoint untouched. The commands run in forked processes (tests/forkrun.py), so the
catalogue costs seconds, not minutes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from forkrun import Result
from synthetic import FIRST, rezip, write_folder, write_splits
from test_miniimagenet import Data, write_csv

TINY = ["train.iterations=3", "train.meta_batch=2", "train.eval_every=2", "eval.tasks=6", "eval.val_tasks=4",
        "eval.chunk=4", "device=cpu"]
CARRY = ["algo=reptile", "algo.inner_optimizer=adam", "algo.inner_state=carry"]
OMNIGLOT = ["data=omniglot", "train.iterations=2", "train.meta_batch=2", "train.queries=2", "eval.tasks=4",
            "eval.val_tasks=0", "eval.chunk=4", "eval.steps=1", "device=cpu"]


def refused(out: Result, code: int, *phrases: str, prog: str = "metarun") -> str:
    """The run stopped with `code` and one paragraph holding every phrase (the setting or file, and the fix)."""
    message = out.error(prog)
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    for phrase in phrases:
        assert phrase in message, message
    return message


def never_started(run_dir: Path) -> None:
    assert not run_dir.exists(), sorted(run_dir.rglob("*"))


def no_results(run_dir: Path) -> None:
    assert not (run_dir / "results.json").exists() and not (run_dir / "scores.csv").exists()
    assert not list(run_dir.glob(".*.tmp"))


def no_cache(cache: Path) -> None:
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


# ---- the command line -----------------------------------------------------------------------------------------

CONFIG = [
    pytest.param(["algo=mammal"], ["`algo=mammal` is not an option of the config group `algo` (did you mean "
                                   "`algo=maml`?)", "Valid options: anil, cavia, convex_imaml, convex_maml, fomaml, "
                                   "imaml, maml, maml_pp, meta_sgd, reptile."], id="unknown-group-option"),
    pytest.param(["train.iteratons=5"], ["`train.iteratons` is not a setting: `train` has no key `iteratons` (did "
                                         "you mean `train.iterations`?)", "Fix the spelling"], id="misspelt-key"),
    pytest.param(["weightng=agreement"], ["`weightng` is not a setting", "(did you mean `weighting`?)"],
                 id="misspelt-group"),
    pytest.param(["train.iterations=many"], ["`train.iterations=many` has the wrong type: Value 'many' of type 'str' "
                                             "could not be converted to Integer", "`train.iterations` takes a whole "
                                             "number, e.g. `train.iterations=3`"], id="wrong-type-int"),
    pytest.param(["eval.transductive=maybe"], ["`eval.transductive=maybe` has the wrong type", "takes true or false, "
                                               "e.g. `eval.transductive=true`"], id="wrong-type-bool"),
    pytest.param(["train.iterations=(("], ["`train.iterations=((` is not a valid override", "key=value"],
                 id="override-syntax"),
    pytest.param(["shots=0"], ["`shots=0` is invalid", "must be greater than 0", "Set e.g. `shots=1`"],
                 id="zero-shots"),
    pytest.param(["queries=-1"], ["`queries=-1` is invalid", "Set e.g. `queries=15`"], id="negative-queries"),
    pytest.param(["train.shots=0"], ["`train.shots=0` is invalid", "or set e.g. `train.shots=10`"],
                 id="zero-training-shots"),
    pytest.param(["inner.steps=0"], ["`inner.steps=0` is invalid", "Set e.g. `inner.steps=5`"],
                 id="zero-inner-steps"),
    pytest.param(["eval.steps=-2"], ["`eval.steps=-2` is invalid", "Set e.g. `eval.steps=5`"],
                 id="negative-test-steps"),
    pytest.param(["outer.lr=0"], ["`outer.lr=0.0` is invalid: a learning rate must be greater than 0",
                                  "Set e.g. `outer.lr=0.01`"], id="zero-outer-lr"),
    pytest.param(["inner.lr=-0.1"], ["`inner.lr=-0.1` is invalid", "Set e.g. `inner.lr=0.01`"],
                 id="negative-inner-lr"),
    pytest.param(["eval.tasks=0"], ["`eval.tasks=0` is invalid", "must be greater than 0"], id="no-test-task"),
    pytest.param(["ways=5"], ["`ways=5` does not apply to data=sine: a regression task has no classes",
                              "Leave out `ways`"], id="ways-on-sine"),
    pytest.param(["device=cuda"], ["`device=cuda` was asked for, but this machine has no usable CUDA GPU",
                                   "Use `device=cpu`"], id="cuda-without-a-gpu"),
    pytest.param(CARRY + ["exec.mode=vmap"], ["`algo.inner_state=carry` makes each task's inner loop start from the "
                                              "Adam state the previous task left", "`exec.mode=vmap` runs them side "
                                              "by side", "Use `exec.mode=loop` (or `auto`)"], id="carry-with-vmap"),
    pytest.param(["exec.workers=2"], ["`exec.workers=2` is retired", "`torchrun --nproc_per_node=2 -m metarun"],
                 id="retired-workers"),
    pytest.param(["algo=reptile", "algo.inner_state=carry"], ["`algo.inner_optimizer=sgd` has none",
                                                              "Set `algo.inner_optimizer=adam`"], id="carry-with-sgd"),
    pytest.param(["algo=reptile", "algo.inner_state=keep"], ["`algo.inner_state=keep` is unknown. Valid values: "
                                                             "fresh, carry."], id="unknown-inner-state"),
    pytest.param(["algo=imaml", "inner.sub_batches=2"], ["`inner.sub_batches=2` splits the support set among the "
                                                         "training inner steps of fomaml, maml, maml_pp, "
                                                         "meta_sgd and reptile",
                                                         "algo=imaml does not use it"], id="sub-batches-for-imaml"),
    pytest.param(["inner.sub_batches=11"], ["`inner.sub_batches=11` is more sub-batches than a training support set "
                                            "has examples (10)", "at most 10"], id="too-many-sub-batches"),
    pytest.param(["model.activation=gelu"], ["`model.activation=gelu` is unknown. Valid values: relu, tanh."],
                 id="unknown-activation"),
    pytest.param(["outer.decay=1.5"], ["`outer.decay=1.5` is invalid: the step decay factor must be in (0, 1]"],
                 id="step-decay-above-one"),
    pytest.param(["eval.select=first"], ["`eval.select=first` is unknown", "`eval.select=last`", "`eval.select=best`"],
                 id="unknown-select"),
    pytest.param(["eval.select=best", "eval.val_tasks=0"], ["`eval.select=best` tests the parameters of the best "
                                                            "validation, but `eval.val_tasks=0` turns validation off",
                                                            "or use `eval.select=last`"], id="best-without-validation"),
]


@pytest.mark.parametrize(("overrides", "phrases"), CONFIG)
def test_bad_setting(forker, tmp_path, overrides, phrases):
    run_dir = tmp_path / "run"
    refused(forker.run(*TINY, *overrides, f"hydra.run.dir={run_dir}"), 2, *phrases)
    never_started(run_dir)


# ---- data ------------------------------------------------------------------------------------------------------

def omniglot(forker, tmp_path: Path, synthetic, *overrides: str, root: Path | None = None,
             splits: Path | None = None) -> Result:
    """`data=omniglot` on the small archives of tests/synthetic.py (or `root`) with split files naming their
    characters (the Vinyals-style ones unless `splits`)."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    root, splits = root or synthetic.data, splits or synthetic.splits["vinyals"]
    out = forker.run(*OMNIGLOT, f"data.root={root}", f"data.split_dir={splits}", f"data.cache_dir={cache}",
                     *overrides, f"hydra.run.dir={run_dir}")
    never_started(run_dir)
    no_cache(cache)
    return out


def test_ways_larger_than_the_classes(forker, tmp_path, synthetic_omniglot):
    out = omniglot(forker, tmp_path, synthetic_omniglot, "ways=61")
    refused(out, 2, "`ways=61` asks for more classes per task than the Omniglot train split has (60)",
            "Set `ways` to at most 60.")


def test_shots_and_queries_larger_than_the_images_per_class(forker, tmp_path, synthetic_omniglot):
    out = omniglot(forker, tmp_path, synthetic_omniglot, "shots=5", "queries=16")
    refused(out, 2, "`shots=5` + `queries=16` = 21 images per class, but every Omniglot class has 20 images",
            "Lower `queries` (or `shots`) so that they add up to at most 20.")


def test_missing_data_root(forker, tmp_path, synthetic_omniglot):
    root = tmp_path / "nowhere"
    refused(omniglot(forker, tmp_path, synthetic_omniglot, root=root), 2,
            f"`data.root={root}` does not exist.", "Run `metarun-data omniglot` (it downloads and verifies them), or "
            "get images_background.zip and images_evaluation.zip from https://github.com/brendenlake/omniglot")


def test_empty_data_folder(forker, tmp_path, synthetic_omniglot):
    root = tmp_path / "data"
    root.mkdir()
    refused(omniglot(forker, tmp_path, synthetic_omniglot, root=root), 2,
            f"`data.root={root}` has no images_background or images_evaluation", "point `data.root`")


def data_root(tmp_path: Path, synthetic_omniglot, background: bytes | None = None) -> Path:
    """A data.root with the synthetic evaluation archive and, if given, these bytes as the background archive."""
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(synthetic_omniglot.data / "images_evaluation.zip", root / "images_evaluation.zip")
    if background is not None:
        (root / "images_background.zip").write_bytes(background)
    return root


def test_truncated_archive(forker, tmp_path, synthetic_omniglot):
    whole = (synthetic_omniglot.data / "images_background.zip").read_bytes()
    root = data_root(tmp_path, synthetic_omniglot, whole[:len(whole) // 2])
    refused(omniglot(forker, tmp_path, synthetic_omniglot, root=root), 2,
            f"{root / 'images_background.zip'} is not a readable zip archive",
            "it is probably truncated or corrupt. Delete it and download it again.")


def test_corrupt_png(forker, tmp_path, synthetic_omniglot):
    root = data_root(tmp_path, synthetic_omniglot)
    rezip(synthetic_omniglot.data / "images_background.zip", root / "images_background.zip",
          {FIRST: b"\x89PNG\r\n\x1a\n not really"})
    refused(omniglot(forker, tmp_path, synthetic_omniglot, root=root), 2,
            f"{root / 'images_background.zip'}: {FIRST} is not a readable PNG",
            "The dataset copy is corrupt: replace it.")


def test_split_file_naming_a_character_that_does_not_exist(forker, tmp_path, synthetic_omniglot):
    splits = write_splits(tmp_path / "splits", "vinyals", {"test": ["Klingon/character01"]})
    out = omniglot(forker, tmp_path, synthetic_omniglot, splits=splits)
    refused(out, 2, f"the split file {splits / 'test.txt'} names 1 character(s) that are not in the data (e.g. "
                    "'Klingon/character01')", "Fix the file, or leave `data.split_dir` empty for the packaged splits.")


def test_unknown_omniglot_split_protocol(forker, tmp_path, synthetic_omniglot):
    out = omniglot(forker, tmp_path, synthetic_omniglot, "data.split=lakes")
    refused(out, 2, "`data.split=lakes` is unknown.", "Use `vinyals`", "or `lake`")


def test_lake_split_files_that_train_on_evaluation_characters(forker, tmp_path, synthetic_omniglot):
    splits = write_splits(tmp_path / "splits", "lake", {"train": ["Angelic/character01"]})
    out = omniglot(forker, tmp_path, synthetic_omniglot, "data.split=lake", splits=splits)
    refused(out, 2, f"`data.split=lake` takes its train characters from images_background only, but the split file "
                    f"{splits / 'train.txt'} names 1 that are not there (e.g. 'Angelic/character01')",
            "use `data.split=vinyals`")


def folder(forker, tmp_path: Path, *overrides: str) -> Result:
    """`data=folder` with tiny settings; the run never starts and no cache is written."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    out = forker.run("data=folder", f"data.cache_dir={cache}", "data.image_size=16", "model.filters=4", "ways=2",
                     "shots=1", "queries=2", *TINY, f"hydra.run.dir={run_dir}", *overrides)
    never_started(run_dir)
    no_cache(cache)
    return out


def test_folder_without_a_root(forker, tmp_path):
    refused(folder(forker, tmp_path), 2, "`data=folder` needs `data.root=PATH`, the folder holding your images",
            "PATH/train/<class>/", "`data.split_csv=FILE`")


def test_folder_class_too_small(forker, tmp_path):
    root = write_folder(tmp_path / "images", {"train": {"a": 3, "b": 3}, "val": {"c": 3, "d": 3},
                                              "test": {"e": 3, "f": 2}})
    refused(folder(forker, tmp_path, f"data.root={root}"), 2,
            "1 class(es) of the test split have fewer than the 3 images an episode takes from each (`shots` + "
            "`queries`): f (2)", "Such classes are refused, not dropped.", "lower `queries` (or `shots`)")


def test_folder_split_csv_naming_a_missing_class(forker, tmp_path):
    root = write_folder(tmp_path / "images", {".": {"a": 3, "b": 3}})
    (root / "split.csv").write_text("class,split\na,train\nb,test\nzebra,val\n")
    refused(folder(forker, tmp_path, f"data.root={root}", "data.split_csv=split.csv"), 2,
            f"`data.split_csv={root / 'split.csv'}` names 1 class(es) that have no folder in `data.root={root}` "
            "(e.g. 'zebra')", "Fix the file, or add the class's folder.")


def miniimagenet(forker, tmp_path: Path, data: Data) -> Result:
    run_dir = tmp_path / "run"
    out = forker.run("data=miniimagenet", f"data.root={data.folder}", f"data.split_dir={data.split_dir}",
                     f"data.cache_dir={data.cache}", "ways=5", "shots=1", "queries=2", "model.filters=4",
                     *TINY, f"hydra.run.dir={run_dir}")
    never_started(run_dir)
    no_cache(data.cache)
    return out


def test_miniimagenet_csv_with_wrong_columns(forker, tmp_path):
    data = Data(tmp_path / "mini")
    path = data.split_dir / "val.csv"
    write_csv(path, data.rows["val"], header=("file", "class"))
    refused(miniimagenet(forker, tmp_path, data), 2,
            f"the split file {path} has columns ['file', 'class']; expected ['filename', 'label']",
            "Fix the file, or leave `data.split_dir` empty")


def test_corrupt_jpeg(forker, tmp_path):
    data = Data(tmp_path / "mini")
    path = data.folder / "images" / data.rows["test"][-1][0]
    path.write_bytes(path.read_bytes()[:200])  # cut short, as an interrupted copy leaves it
    refused(miniimagenet(forker, tmp_path, data), 2, f"{path} is not a readable image",
            "The dataset copy is corrupt: replace that file.")


# ---- the output folder ------------------------------------------------------------------------------------------

def test_output_folder_that_cannot_be_made(forker, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should go\n")
    out = forker.run(*TINY, f"hydra.run.dir={blocker}/run")
    refused(out, 1, f"cannot write {blocker}/run (Not a directory)",
            "choose another folder with `hydra.run.dir=...`")
    assert blocker.read_text() == "a file where the output folder should go\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_output_folder(forker, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    out = forker.run(*TINY, f"hydra.run.dir={locked}/run")
    refused(out, 1, f"cannot write {locked}/run (Permission denied)", "The folder is not writable by you")
    assert not list(locked.iterdir())


# ---- training that cannot go on ---------------------------------------------------------------------------------

LONGER = ["train.iterations=12", "train.meta_batch=2", "train.eval_every=0", "train.checkpoint_every=3",
          "eval.tasks=4", "eval.val_tasks=0", "device=cpu"]


def last_logged(run_dir: Path) -> int:
    return max(int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:])


def test_loss_becomes_nan(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*LONGER, f"hydra.run.dir={run_dir}",
                     patch=("poison_sample", {"split": "train", "call": 8, "value": math.nan}))
    refused(out, 1, "training diverged at iteration 8: the combined meta-gradient is not finite",
            "lower `inner.lr` or `outer.lr`, and run in a new folder",
            f"{run_dir / 'checkpoint.pt'} from iteration 6, the last finite state saved")
    no_results(run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 6 and all(torch.isfinite(p).all() for p in state["params"].values())
    assert last_logged(run_dir) == 7


def test_loss_becomes_infinite_before_any_checkpoint(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*LONGER, f"hydra.run.dir={run_dir}",
                     patch=("poison_sample", {"split": "train", "call": 2, "value": math.inf}))
    refused(out, 1, "training diverged at iteration 2", "no checkpoint: none was saved before it",
            "`train.checkpoint_every`")
    no_results(run_dir)
    assert not (run_dir / "checkpoint.pt").exists() and last_logged(run_dir) == 1


def test_agreement_weighting_with_every_vector_zero(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*TINY, "weighting=agreement", f"hydra.run.dir={run_dir}", patch=("zero_agreement_vectors", {}))
    refused(out, 1, "`weighting=agreement` cannot weigh this meta-batch of 2 tasks: every task's vector is exactly "
                    "zero", "are 0/0", "or use `weighting=uniform`", "No results were written.")
    no_results(run_dir)


# ---- resuming ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(forker, tmp_path_factory) -> Path:
    """A finished tiny run: its checkpoint and results.json are copied into the cases below."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    out = forker.run(*TINY, f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr
    return run_dir


def with_checkpoint(tmp_path: Path, data: bytes) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(data)
    return run_dir


def test_checkpoint_from_another_config(forker, tmp_path, finished):
    data = (finished / "checkpoint.pt").read_bytes()
    run_dir = with_checkpoint(tmp_path, data)
    out = forker.run(*TINY, "inner.lr=0.02", f"hydra.run.dir={run_dir}")
    refused(out, 2, f"{run_dir / 'checkpoint.pt'} (iteration 3) was written by a run with a different config "
                    "(eval.lr: 0.01 there, 0.02 now; inner.lr: 0.01 there, 0.02 now)",
            f"Run the same command as before to continue it (`metarun --resume {run_dir}` repeats it), choose "
            "another folder (hydra.run.dir=...), or delete the checkpoint to start over.")
    no_results(run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == data
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]  # no .hydra/ for a refused run


@pytest.mark.parametrize("cut", [pytest.param(None, id="garbage"), pytest.param(0.5, id="truncated")])
def test_corrupt_checkpoint(forker, tmp_path, finished, cut):
    whole = (finished / "checkpoint.pt").read_bytes()
    data = b"not a checkpoint" if cut is None else whole[: int(len(whole) * cut)]
    run_dir = with_checkpoint(tmp_path, data)
    out = forker.run(*TINY, f"hydra.run.dir={run_dir}")
    message = refused(out, 2, f"{run_dir / 'checkpoint.pt'} cannot be read as a metarun checkpoint: it is cut "
                              "short or damaged, or not a checkpoint at all (torch.load said ",
                      "It holds the state a stopped run continues from",
                      "Delete it to start this run over, or run in another folder")
    assert "invalid load key" not in message and "central directory" not in message  # not the unpickler's words
    no_results(run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == data


# ---- tables -----------------------------------------------------------------------------------------------------

def no_table(folder: Path) -> None:
    assert not list(folder.glob("table.*"))


def test_table_of_a_folder_without_runs(forker, tmp_path):
    (tmp_path / "notes.txt").write_text("no runs here\n")
    out = forker.run(str(tmp_path), entry="table")
    refused(out, 2, f"no results.json under {tmp_path}", "pass folders of finished runs", prog="metarun-table")
    no_table(tmp_path)


def sweep_with(tmp_path: Path, finished: Path, change) -> Path:
    """A folder of two runs: one as written now, one whose results.json `change` rewrote."""
    for name in ("good", "other"):
        shutil.copytree(finished, tmp_path / name, ignore=shutil.ignore_patterns("checkpoint.pt"))
    path = tmp_path / "other" / "results.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize(("change", "phrases"), [
    pytest.param(lambda r: r.pop("format"), ["has no format number; metarun 0.1.0 reads results format 1",
                                             "delete it and run the same command again in"], id="no-format"),
    pytest.param(lambda r: r.update(format=0), ["has format 0; metarun 0.1.0 reads results format 1",
                                                "(a checkpoint of the same config is evaluated again without "
                                                "training), or leave that folder out"], id="older-format"),
    pytest.param(lambda r: r.update(format=2, metarun="9.9"), ["has format 2", "It was written by metarun 9.9, "
                                                               "newer than this one (0.1.0)"], id="newer-format"),
    pytest.param(lambda r: r.pop("mean"), ["(format 1) lacks mean", "it was edited or cut short"],
                 id="cut-short"),
])
def test_table_with_a_results_file_it_cannot_read(forker, tmp_path, finished, change, phrases):
    path = sweep_with(tmp_path, finished, change)
    out = forker.run(str(tmp_path), entry="table")
    refused(out, 2, f"{path} ", *phrases, prog="metarun-table")
    no_table(tmp_path)


def test_rerun_in_a_folder_with_an_older_results_file(forker, tmp_path, finished):
    path = sweep_with(tmp_path, finished, lambda r: r.pop("format"))
    before = path.read_bytes()
    out = forker.run(*TINY, f"hydra.run.dir={path.parent}")
    refused(out, 2, f"{path} has no format number", "delete it and run the same command again")
    assert path.read_bytes() == before


# ---- a folder holds one config's run (issue 19) ----------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under the folder, .hydra/ included, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copied(finished: Path, tmp_path: Path, stopped: bool = False) -> Path:
    """A copy of the finished run; `stopped`: without its results, as a run stopped after its last checkpoint."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    if stopped:
        (run_dir / "results.json").unlink()
        (run_dir / "scores.csv").unlink()
    return run_dir


def test_finished_folder_of_another_config(forker, tmp_path, finished):
    run_dir = copied(finished, tmp_path)
    before = snapshot(run_dir)
    longer = [o.replace("iterations=3", "iterations=4") for o in TINY]
    out = forker.run(*longer, f"hydra.run.dir={run_dir}")
    refused(out, 2, f"{run_dir} holds the finished results (results.json) of a different config (train.iterations: "
                    "3 there, 4 now), so they are not reported for, nor continued with, this config, and nothing in "
                    "the folder was changed", f"Run in another folder (`hydra.run.dir=...`), `metarun --resume "
                    f"{run_dir}` to repeat that run's own command, or delete the folder to start over.")
    assert snapshot(run_dir) == before  # .hydra/ too: the folder never contradicts its results
    same = forker.run(*TINY, f"hydra.run.dir={run_dir}")  # the same config: its results, reported again
    assert same.returncode == 0 and "maml + uniform" in same.stdout and snapshot(run_dir) == before


def test_folder_whose_results_contradict_its_config(forker, tmp_path, finished):
    # What older versions left: a report for `train.iterations=4` rewrote .hydra/config.yaml of a 3-iteration run.
    run_dir = copied(finished, tmp_path)
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("iterations: 3", "iterations: 4"))
    before = snapshot(run_dir)
    longer = [o.replace("iterations=3", "iterations=4") for o in TINY]
    refused(forker.run(*longer, f"hydra.run.dir={run_dir}"), 2,
            f"{run_dir / 'results.json'} and {config} disagree (train.iterations: 3 in results.json, 4 in "
            ".hydra/config.yaml)", "they are not reported. Delete the folder to run it again")
    assert snapshot(run_dir) == before


def test_hydra_writing_its_config_before_the_run_is_checked(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*TINY, "hydra.output_subdir=.hydra", f"hydra.run.dir={run_dir}")
    refused(out, 2, "`hydra.output_subdir=.hydra` makes Hydra write the config into the run folder before metarun "
                    "has checked", "leave hydra.output_subdir unset")
    never_started(run_dir)


def test_stopped_run_of_another_config(forker, tmp_path, finished):
    run_dir = copied(finished, tmp_path, stopped=True)
    before = snapshot(run_dir)
    out = forker.run(*TINY, "inner.lr=0.02", f"hydra.run.dir={run_dir}")
    refused(out, 2, f"{run_dir} holds a stopped run (checkpoint.pt) of a different config (eval.lr: 0.01 there, "
                    "0.02 now; inner.lr: 0.01 there, 0.02 now)")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("overrides", [pytest.param(["shots=0"], id="bad-setting"),
                                       pytest.param(["data=omniglot", "data.root=/nowhere"], id="missing-data")])
def test_refused_run_leaves_no_folder_behind(forker, tmp_path, overrides):
    default_like = tmp_path / "outputs" / "runs" / "${now:%Y-%m-%d}" / "${now:%H-%M-%S}"  # as the default folder
    out = forker.run(*TINY, *overrides, f"hydra.run.dir={default_like}")
    assert out.returncode == 2, out.stderr
    assert not (tmp_path / "outputs").exists(), sorted(tmp_path.rglob("*"))  # nor its DATE/ parent


def test_resume_with_an_override_that_changes_the_config(forker, tmp_path, finished):
    run_dir = copied(finished, tmp_path, stopped=True)
    before = snapshot(run_dir)
    out = forker.run("--resume", str(run_dir), "train.meta_batch=3", "device=cpu")
    refused(out, 2, f"{run_dir} holds a stopped run (checkpoint.pt) of a different config (train.meta_batch: 2 "
                    "there, 3 now)")
    assert snapshot(run_dir) == before
    done = forker.run("--resume", str(run_dir), "device=cpu")  # an override that changes nothing is taken
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "results.json").read_text())["resumed_from"] == 3


@pytest.mark.parametrize(("argv", "phrases"), [
    pytest.param(["--resume"], ["`--resume` needs the folder to continue"], id="no-folder"),
    pytest.param(["--resume", "{tmp}"], ["`--resume {tmp}`: {tmp} is not a folder that metarun wrote: it has neither "
                                         ".hydra/overrides.yaml (a run) nor multirun.yaml (a multirun)"],
                 id="not-a-run-folder"),
    pytest.param(["--resume", "{tmp}/nowhere"], ["`--resume {tmp}/nowhere`: there is no {tmp}/nowhere. Pass the "
                                                 "folder that the stop message"], id="no-such-folder"),
    pytest.param(["-m", "--resume", "{tmp}"], ["continues what the folder holds, a run or a multirun; leave out "
                                               "`-m`"], id="with-multirun"),
])
def test_bad_resume(forker, tmp_path, argv, phrases):
    out = forker.run(*(a.format(tmp=tmp_path) for a in argv))
    refused(out, 2, *(p.format(tmp=tmp_path) for p in phrases))
    assert not list(tmp_path.iterdir())


# ---- command-line papercuts (issue 19) -------------------------------------------------------------------------

def test_eval_every_below_zero_says_what_zero_means(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*TINY, "train.eval_every=-5", f"hydra.run.dir={run_dir}")
    refused(out, 2, "`train.eval_every=-5` is invalid: it must be 0 or more. `train.eval_every=0` means validate "
                    "only at the end of training (`eval.val_tasks=0` turns validation off).")
    never_started(run_dir)


def test_config_inspection_with_multirun(forker, tmp_path):
    out = forker.run("-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "algo=maml,reptile", "--cfg", "job")
    refused(out, 2, "`--cfg`, `--info` and `--shell-completion` show one config and run nothing, so they cannot be "
                    "combined with `-m`/`--multirun`", "e.g. `metarun --cfg job algo=maml`")
    assert not list(tmp_path.iterdir())


def test_version_names_metarun_torch_and_its_cuda_build(forker):
    out = forker.run("--version")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build (no CUDA)"
    assert out.stdout.startswith(f"metarun 0.1.0 (torch {torch.__version__}, {build}; Hydra 1.3."), out.stdout


def test_table_into_a_folder_that_does_not_exist_yet(forker, tmp_path, finished):
    dest = tmp_path / "paper" / "tables"
    out = forker.run(str(finished), "--out", str(dest), entry="table")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["table.csv", "table.md", "table.tex"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    refused(forker.run(str(finished), "--out", str(blocker / "tables"), entry="table"), 1,
            f"cannot write {blocker / 'tables'}", "A file stands where a folder must be made", "`--out FOLDER`",
            prog="metarun-table")


def test_table_help_says_95_percent(forker):
    out = forker.run("--help", entry="table")
    assert out.returncode == 0 and "95% CI" in out.stdout and "%%" not in out.stdout
