"""Sweeps through Hydra's launchers: joblib and submitit's local executor run real jobs; one
failing job leaves the others' results and shows as a failed cell in the table."""

from __future__ import annotations

import json

import pytest

from test_cli import TINY, metarun, table


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["local", "submitit_local"])
def test_launcher_runs_every_job(tmp_path, cli_env, launcher):
    sweep = tmp_path / "sweep"
    env = {**cli_env, "OMP_NUM_THREADS": "1"}  # two jobs at once must not fight over the cores
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "local" else ["hydra.launcher.timeout_min=10"]
    out = metarun("-m", f"hydra/launcher={launcher}", *extra, "algo=maml,fomaml", *TINY,
                  f"hydra.sweep.dir={sweep}", env=env)
    assert out.returncode == 0, out.stderr
    records = {json.loads(p.read_text())["algo"]: p.parent.name for p in sweep.glob("*/results.json")}
    # Job folders are named from their overrides, so a rerun finds them.
    assert set(records) == {"maml", "fomaml"}
    assert all(name.startswith(f"algo={algo},") for algo, name in records.items())
    # With submitit the jobs' own output goes to its log files: the end of the sweep says where the results are.
    assert f"2 job folder(s) under {sweep} hold results.json; one table of them all: metarun-table {sweep}" \
        in out.stdout, out.stdout


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_is_marked(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    out = metarun("-m", "shots=0,5", *TINY, f"hydra.sweep.dir={sweep}", env=cli_env)
    assert out.returncode != 0  # Hydra reports the failure once every job has run
    assert "`shots=0` is invalid" in out.stderr
    (failed,) = sweep.glob("*shots=0*")
    (finished,) = sweep.glob("*shots=5*")
    assert (finished / "results.json").is_file()
    failure = json.loads((failed / "failed.json").read_text())
    assert failure["exit_code"] == 2 and "`shots=0`" in failure["error"]
    assert not (failed / "results.json").exists()
    shown = table(str(sweep), env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout and "sine 0-shot (mse)" in shown.stdout and "sine 5-shot (mse)" in shown.stdout


@pytest.mark.slow
def test_an_unfinished_job_is_marked_missing(tmp_path, cli_env):
    sweep = tmp_path / "sweep"
    out = metarun("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", env=cli_env)
    assert out.returncode == 0, out.stderr
    (unfinished,) = sweep.glob("*seed=1*")
    (unfinished / "results.json").unlink()  # as if the job had been killed
    shown = table(str(sweep), env=cli_env)
    assert "missing" in shown.stdout and "(seed=1)" in shown.stdout


@pytest.mark.slow
def test_optuna_search_preset_runs_trials_and_reports_the_best(tmp_path, cli_env):
    sweep = tmp_path / "search"
    out = metarun("-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={sweep}",
                  env=cli_env)
    assert out.returncode == 0, out.stderr
    assert len(list(sweep.glob("*/results.json"))) == 2
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "inner.lr" in best and "outer.lr" in best
    assert "\x1b[" not in out.stderr + out.stdout  # no colour codes where there is no terminal
    # Two trials differ only in their learning rates: two rows, each named by them.
    shown = table(str(sweep), env=cli_env)
    rows = [line for line in shown.stdout.splitlines() if line.startswith("| maml + uniform (")]
    assert len(rows) == 2 and all("eval.lr" not in r and "inner.lr=" in r and ", outer.lr=" in r for r in rows), rows


def test_table_shows_every_job_of_a_sweep_over_any_setting(forker, tmp_path):
    sweep = tmp_path / "sweep"
    out = forker.run("-m", "inner.lr=0.01,0.02", "seed=0,1", *TINY, "device=cpu", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    shown = forker.run(str(sweep), entry="table")
    assert shown.returncode == 0, shown.stderr
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in shown.stdout.splitlines()
             if line.startswith("| maml")}
    # A row per job, named by the settings in which the jobs differ (eval.lr only follows inner.lr), seed last.
    assert sorted(cells) == [f"maml + uniform (inner.lr={lr}, seed={seed})" for lr in ("0.01", "0.02")
                             for seed in (0, 1)]
    assert all("±" in c for c in cells.values()) and len(set(cells.values())) == 4


def test_resume_continues_a_multirun_in_its_folder(forker, tmp_path):
    sweep = tmp_path / "sweep"
    assert forker.run("-m", "seed=0,1", *TINY, "device=cpu", f"hydra.sweep.dir={sweep}").returncode == 0
    (done,) = sweep.glob("*seed=0*")
    (stopped,) = sweep.glob("*seed=1*")
    kept = (done / "results.json").read_bytes()
    (stopped / "results.json").unlink()  # as if it had been stopped after its last checkpoint
    out = forker.run("--resume", str(sweep))  # the sweep's own overrides, from its multirun.yaml
    assert out.returncode == 0, out.stderr
    assert (done / "results.json").read_bytes() == kept  # reported, not run again
    assert json.loads((stopped / "results.json").read_text())["resumed_from"] == 3
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted([done.name, stopped.name])
