"""End to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

TINY = ["train.iterations=3", "train.meta_batch=2", "train.eval_every=2", "eval.tasks=6",
        "eval.val_tasks=4", "eval.chunk=4"]


def metarun(*args: str, env=None) -> subprocess.CompletedProcess:
    # From a neutral folder: the configs must be found wherever the user stands.
    return subprocess.run([sys.executable, "-m", "metarun", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=env and env.get("METARUN_TEST_CWD"))


def table(*args: str, env=None) -> subprocess.CompletedProcess:
    code = "import sys; from metarun.commands.table import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


def test_tiny_run_writes_its_files(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    out = metarun(*TINY, "algo=reptile", "weighting=agreement", f"hydra.run.dir={run_dir}", env=cli_env)
    assert out.returncode == 0, out.stderr
    results = json.loads((run_dir / "results.json").read_text())
    expected = {"data", "ways", "shots", "algo", "weighting", "metric", "mean", "ci95", "n_tasks",
                "seconds", "device", "torch", "seed"}
    assert expected <= results.keys()
    assert (results["algo"], results["weighting"], results["n_tasks"], results["device"]) == (
        "reptile", "agreement", 6, "cpu")
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert {"loss_before", "loss_after", "val_mean", "w_min", "w_max", "w_negative", "seconds"} <= rows[0].keys()
    assert rows[1]["val_mean"] != "" and rows[0]["val_mean"] == ""
    assert len((run_dir / "scores.csv").read_text().splitlines()) == 1 + 6
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert "reptile + agreement" in out.stdout

    # The same command again reports the finished run, without importing torch and without writing anything.
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code = ("import sys; from metarun.commands.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    again = subprocess.run([sys.executable, "-c", code, *TINY, "algo=reptile", "weighting=agreement",
                            f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=cli_env, timeout=60)
    first, rest = out.stdout.split("\n", 1)
    assert first == f"run folder: {run_dir} (training for 3 iterations)"  # said at once, before the run's table
    assert again.stdout == (f"run folder: {run_dir} holds this run's results already (nothing was run again):\n"
                            + rest + "NO-TORCH\n"), again.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


@pytest.mark.slow
def test_one_test_task_is_a_score_without_an_interval(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("eval.tasks")]
    out = metarun(*overrides, "eval.tasks=1", f"hydra.run.dir={run_dir}", env=cli_env)
    assert out.returncode == 0, out.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n_tasks"] == 1 and results["ci95"] is None and results["ci95_before"] is None
    assert results["ci95_method"] == "t"
    assert "(1 task: no CI)" in out.stdout and "nan" not in out.stdout


@pytest.mark.slow
def test_multirun_then_table_has_a_row_per_job(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    out = metarun("-m", "algo=maml,reptile", "weighting=uniform,agreement", *TINY,
                  f"hydra.sweep.dir={sweep}", env=cli_env)
    assert out.returncode == 0, out.stderr
    assert len(list(sweep.glob("*/results.json"))) == 4
    shown = table(str(sweep), env=cli_env)
    assert shown.returncode == 0, shown.stderr
    for method in ("maml + uniform", "maml + agreement", "reptile + uniform", "reptile + agreement"):
        assert method in shown.stdout
    rows = list(csv.reader(open(sweep / "table.csv")))
    assert len(rows) == 1 + 4 and rows[0][1] == "sine 10-shot (mse)"
    assert (sweep / "table.md").is_file() and (sweep / "table.tex").is_file()


@pytest.mark.parametrize(
    ("override", "named"),
    [("shots=0", "shots=0"), ("inner.steps=-1", "inner.steps=-1"), ("inner.lr=0", "inner.lr=0.0"),
     ("device=cuda", "device=cuda"),
     ("algo=cavia weighting=agreement weighting.vectors=updates", "weighting.vectors=updates"),
     ("weighting=loss_softmax weighting.temperature=0", "weighting.temperature=0.0")],
)
def test_bad_values_fail_cleanly_and_leave_nothing(tmp_path, cli_env, override, named):
    run_dir = tmp_path / "run"
    out = metarun(*TINY, *override.split(), f"hydra.run.dir={run_dir}", env=cli_env)
    assert out.returncode != 0
    assert f"`{named}`" in out.stderr and "Traceback" not in out.stderr
    assert not run_dir.exists()


def test_unknown_algorithm_names_the_valid_ones(tmp_path, cli_env):
    out = metarun("algo=mammal", f"hydra.run.dir={tmp_path / 'run'}", env=cli_env)
    assert out.returncode != 0
    assert "`algo=mammal` is not an option" in out.stderr and "reptile" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bad_input_does_not_touch_an_existing_run(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    assert metarun(*TINY, f"hydra.run.dir={run_dir}", env=cli_env).returncode == 0
    before = (run_dir / "results.json").read_bytes()
    out = metarun(*TINY, "queries=0", f"hydra.run.dir={run_dir}", env=cli_env)
    assert out.returncode != 0
    assert (run_dir / "results.json").read_bytes() == before


def test_table_on_a_folder_without_runs(tmp_path, cli_env):
    out = table(str(tmp_path), env=cli_env)
    assert out.returncode == 2 and "no results.json" in out.stderr


def test_config_inspection_does_not_import_torch(cli_env):
    code = ("import sys; sys.argv = ['metarun', '--cfg', 'job', 'algo=reptile']\n"
            "from metarun.commands.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, timeout=60)
    assert "inner_optimizer: sgd" in out.stdout and out.stdout.strip().endswith("NO-TORCH")


@pytest.mark.slow
def test_divergence_stops_with_the_iteration_and_writes_no_results(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    out = metarun("train.iterations=50", "train.meta_batch=2", "train.eval_every=0", "eval.tasks=4",
                  "eval.val_tasks=0", "inner.lr=100", f"hydra.run.dir={run_dir}", env=cli_env)
    assert out.returncode == 1
    assert "training diverged at iteration" in out.stderr and "inner.lr" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (run_dir / "results.json").exists() and not (run_dir / "scores.csv").exists()


@pytest.mark.slow
def test_tensorboard_logger_writes_events_and_hyperparameters(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    out = metarun(*TINY, "logger=tensorboard", f"hydra.run.dir={run_dir}", env=cli_env)
    assert out.returncode == 0, out.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"loss_after", "val_mean", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss_after")] == [1, 2, 3]
    assert list((run_dir / "tensorboard").glob("hparams/events.out.tfevents.*"))  # the config as hyperparameters
    assert (run_dir / "metrics.csv").is_file()  # CSV is always written


def test_help_into_a_closed_pipe_ends_quietly(cli_env):
    # `metarun --help | head -1`: the reader is gone before metarun writes; no traceback, the shell's exit code.
    proc = subprocess.Popen([sys.executable, "-m", "metarun", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and err == b"", err.decode()


def test_help_lists_the_groups_a_user_chooses_from(forker):
    out = forker.run("--help")
    assert out.returncode == 0, out.stderr
    groups = out.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    assert listed == {"algo", "data", "model", "paper", "study", "weighting"}  # not Hydra's internal schemas/*
    assert "algo: anil, cavia, convex_imaml" in groups
