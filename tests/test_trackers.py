"""`logger=mlflow` and `logger=wandb`: one tracked run per run folder (a resumed run continues its own, with no
step logged twice), and a tracker that is missing, unreachable or fails mid-run never stops a run or changes it."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from metarun.config.schema import ConfigError
from metarun.config.store import config_dir, register
from test_cli import TINY, metarun
from test_resume import ITERATIONS, SETTINGS, iterations_logged

FILES = {"config.yaml", "metrics.csv", "results.json", "scores.csv", "table.md"}
NOT_INSTALLED = 'is not installed (pip install -e ".[test]" installs it)'


def client(uri: str):
    return pytest.importorskip("mlflow", reason=f"mlflow {NOT_INSTALLED}").MlflowClient(tracking_uri=uri)


def make(*overrides: str):
    register()  # the schemas in Hydra's ConfigStore, as the metarun command does
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A local MLflow file store in the test's folder. MLflow 3 refuses a file store unless asked to keep one."""
    pytest.importorskip("mlflow", reason=f"mlflow {NOT_INSTALLED}")
    uri = f"file://{tmp_path}/mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def with_store(cli_env: dict, uri: str) -> dict:
    return {**cli_env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true"}


def runs_of(uri: str, experiment: str) -> list:
    store = client(uri)
    found = store.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in store.search_experiments()]
    return store.search_runs([found.experiment_id])


def steps(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def csv_column(run_dir: Path, key: str) -> list[tuple[int, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["iteration"]), float(r[key])) for r in csv.DictReader(f) if r[key] != ""]


def same(logged: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """The same steps, with the same values (to float rounding)."""
    return ([s for s, _ in logged] == [s for s, _ in expected]
            and [v for _, v in logged] == pytest.approx([v for _, v in expected]))


def head_commit() -> str | None:
    """The commit of the checkout that holds metarun's code (none for an installed copy outside one)."""
    import metarun.run.trackers

    done = subprocess.run(["git", "-C", str(Path(metarun.run.trackers.__file__).parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def check_mlflow_run(uri: str, run, run_dir: Path, downloads: Path) -> None:
    """The MLflow run holds what the run folder holds: params, each row's metrics at its step, the test, files."""
    from mlflow.artifacts import download_artifacts

    results = json.loads((run_dir / "results.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert json.loads((run_dir / "tracker.json").read_text())["mlflow"]["run_id"] == run.info.run_id
    params = run.data.params
    assert params["train.iterations"] == str(results["iterations"]) and params["seed"] == str(results["seed"])
    assert params["algo.name"] == results["algo"] and params["outer.optimizer._target_"] == "torch.optim.Adam"
    expected_tags = {"algo": results["algo"], "weighting": results["weighting"], "data": "sine",
                     "seed": str(results["seed"])}
    assert expected_tags.items() <= run.data.tags.items()
    assert run.data.tags.get("commit") == head_commit()  # absent outside a git checkout
    for key in ("loss_after", "val_mean", "lr"):
        assert same(steps(uri, run.info.run_id, key), csv_column(run_dir, key)), key
    assert run.data.metrics["test/mean"] == pytest.approx(results["mean"])
    assert run.data.metrics["test/ci95"] == pytest.approx(results["ci95"])
    assert run.data.metrics["test/n_tasks"] == results["n_tasks"]
    assert {a.path for a in client(uri).list_artifacts(run.info.run_id)} == FILES
    kept = Path(download_artifacts(run_id=run.info.run_id, artifact_path="results.json", dst_path=str(downloads),
                                   tracking_uri=uri))
    assert kept.read_text() == (run_dir / "results.json").read_text()


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_run_per_job_in_an_experiment_named_after_it(tmp_path, cli_env, store):
    sweep = tmp_path / "sweep"
    out = metarun("-m", "seed=0,1", *TINY, "logger=mlflow", f"hydra.sweep.dir={sweep}",
                  env=with_store(cli_env, store))
    assert out.returncode == 0, out.stderr
    assert "metarun: warning" not in out.stderr, out.stderr
    runs = runs_of(store, "sweep")  # the sweep folder, relative to where metarun ran (tmp_path)
    assert sorted(r.info.run_name for r in runs) == sorted(p.parent.name for p in sweep.glob("*/results.json"))
    for run in runs:
        check_mlflow_run(store, run, sweep / run.info.run_name, tmp_path / "downloads" / run.info.run_name)
    assert [r.data.params["seed"] for r in sorted(runs, key=lambda r: r.info.run_name)] == ["0", "1"]


def command(run_dir: Path, logger: str) -> list[str]:
    return [sys.executable, "-m", "metarun", *SETTINGS, f"logger={logger}", f"hydra.run.dir={run_dir}"]


def stop_at_iteration_10(run_dir: Path, env: dict, logger: str, signum: int) -> None:
    proc = subprocess.Popen(command(run_dir, logger), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=run_dir.parent)
    deadline = time.time() + 120
    while iterations_logged(run_dir) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signum, err
    assert not (run_dir / "results.json").exists()


# SIGTERM checkpoints the iteration it stops at; SIGKILL (a crash) leaves the last periodic checkpoint, so the
# resumed run trains again iterations that MLflow already holds: they must not be logged twice.
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_and_resumed_run_is_one_mlflow_run_with_each_step_once(tmp_path, cli_env, store, signum):
    run_dir, env = tmp_path / "run", with_store(cli_env, store)
    stop_at_iteration_10(run_dir, env, "mlflow", signum)
    (before,) = runs_of(store, "metarun")
    # Stopped at a signal, the run says so; killed, it could not.
    assert before.info.status == ("KILLED" if signum == signal.SIGTERM else "RUNNING")
    resumed = subprocess.run(command(run_dir, "mlflow"), capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "metarun: warning" not in resumed.stderr, resumed.stderr
    (run,) = runs_of(store, "metarun")
    assert run.info.run_id == before.info.run_id
    logged = steps(store, run.info.run_id, "loss_after")
    assert [s for s, _ in logged] == list(range(1, ITERATIONS + 1))  # every iteration, once
    assert same(logged, csv_column(run_dir, "loss_after"))  # resuming reproduces the same numbers
    assert json.loads((run_dir / "results.json").read_text())["resumed_from"] >= 7


def test_a_tracker_without_its_package_is_refused_before_training(tmp_path, monkeypatch):
    from metarun.config.checks import check
    from metarun.run.loggers import tracker
    from metarun.run.train import run

    for package in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed
        cfg = make(*TINY, f"logger={package}", "device=cpu")
        with pytest.raises(ConfigError, match=rf"`logger={package}` needs the {package} package, but it is not "):
            check(cfg)  # as `metarun` checks a config: before the run folder is made
        run_dir = tmp_path / package
        run_dir.mkdir()
        with pytest.raises(ConfigError) as refused:
            tracker(cfg, run_dir, resumed=False)
        said = str(refused.value)
        assert f'pip install "metarun[{package}]"' in said and "`logger=csv`" in said and "\n" not in said
        assert list(run_dir.iterdir()) == []
        with pytest.raises(ConfigError, match=r"metarun\[" + package):
            run(cfg, run_dir)
        assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "results.json").exists()
        assert len((run_dir / "metrics.csv").read_text().splitlines()) <= 1  # no iteration trained


def run_files(run_dir: Path) -> dict[str, str]:
    """What a run wrote that a tracker must not change: results (timings aside), scores, metrics (seconds aside)."""
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("seconds", "train_seconds"):
        results.pop(key)
    with open(run_dir / "metrics.csv") as f:
        metrics = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    return {"results": results, "scores": (run_dir / "scores.csv").read_text(), "metrics": metrics}


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_one_warning_and_the_run_is_complete(tmp_path, cli_env):
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = {**cli_env, "MLFLOW_TRACKING_URI": uri}
    out = metarun(*TINY, "logger=mlflow", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("metarun: warning:")]
    assert len(warnings) == 1 and out.stderr.count("warning") == 1, out.stderr
    assert uri in warnings[0] and "stay complete" in warnings[0] and "Traceback" not in out.stderr
    plain = metarun(*TINY, "logger=csv", f"hydra.run.dir={tmp_path / 'plain'}", env=cli_env)
    assert plain.returncode == 0, plain.stderr
    assert run_files(tmp_path / "run") == run_files(tmp_path / "plain")  # same files, same numbers


def test_a_tracker_that_fails_mid_run_warns_once_and_stays_off(tmp_path, store, capsys):
    from metarun.run.trackers import MLflowLog

    cfg = make(*TINY, "logger=mlflow")
    log = MLflowLog(cfg, tmp_path, resumed=False)
    assert log.on, capsys.readouterr().err
    log.write({"iteration": 1, "lr": 0.001, "loss_after": 0.5})

    def gone(*args, **kwargs):
        raise ConnectionError("Connection refused")

    log.client.log_batch = gone  # the server went away
    log.write({"iteration": 2, "lr": 0.001, "loss_after": 0.4})
    log.write({"iteration": 3, "lr": 0.001, "loss_after": 0.3})
    log.close({}, {"mean": 0.3, "ci95": 0.1, "n_tasks": 6, "iterations": 3})
    err = capsys.readouterr().err
    assert err.count("metarun: warning:") == 1 and store in err and "ConnectionError" in err, err
    assert not log.on
    assert steps(store, log.run_id, "loss_after") == [(1, 0.5)]
    assert client(store).get_run(log.run_id).info.status == "RUNNING"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a free local port, stopped (its process group) after the test; skipped if it is not
    answering within 30 seconds."""
    pytest.importorskip("mlflow", reason=f"mlflow {NOT_INSTALLED}")
    port = free_port()
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"file://{tmp_path}/server-store", "--artifacts-destination",
         str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.skip(f"`mlflow server` did not answer on {uri} within 30 s (exit code {proc.poll()})")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_run_logs_to_an_mlflow_server(tmp_path, cli_env, mlflow_server):
    run_dir = tmp_path / "run"
    out = metarun(*TINY, "logger=mlflow", f"hydra.run.dir={run_dir}",
                  env={**cli_env, "MLFLOW_TRACKING_URI": mlflow_server})
    assert out.returncode == 0, out.stderr
    assert "metarun: warning" not in out.stderr, out.stderr
    (run,) = runs_of(mlflow_server, "metarun")
    check_mlflow_run(mlflow_server, run, run_dir, tmp_path / "downloads")


# ---- W&B, offline ----------------------------------------------------------------------------------------------

def wandb_records(path: Path) -> list:
    """The records of an offline run's .wandb file: W&B's header (7 bytes), then LevelDB-log chunks in blocks of
    32 KiB (each: checksum, length, type 1 full / 2 first / 3 middle / 4 last), each record a protobuf."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # the rest of a block is padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_env(cli_env: dict, tmp_path: Path) -> dict:
    """No W&B configuration of the user's, and W&B's own folders in the test's."""
    pytest.importorskip("wandb", reason=f"wandb {NOT_INSTALLED}")
    env = {k: v for k, v in cli_env.items() if not k.startswith("WANDB_")}
    return env | {f"WANDB_{d}_DIR": str(tmp_path / "wandb-home" / d.lower()) for d in ("CONFIG", "CACHE", "DATA")}


def key(item) -> str:
    """An item's key: W&B keeps some flat (`test/mean`), some as a path (`_step`)."""
    return item.key or "/".join(item.nested_key)


def wandb_history(run_dir: Path, run_id: str) -> tuple[list[dict], dict, list]:
    """Every offline folder of the run (one per session): the logged rows, the summary, the run records."""
    rows, summary, runs = [], {}, []
    for path in sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                summary |= {key(i): json.loads(i.value_json) for i in record.summary.update}
            elif kind == "run":
                runs.append(record.run)
    return rows, summary, runs


@pytest.mark.slow
def test_wandb_offline_keeps_the_run_under_its_folder(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    out = metarun(*TINY, "logger=wandb", f"hydra.run.dir={run_dir}", env=wandb_env(cli_env, tmp_path))
    assert out.returncode == 0, out.stderr
    assert "metarun: warning" not in out.stderr, out.stderr
    run_id = json.loads((run_dir / "tracker.json").read_text())["wandb"]["run_id"]
    (folder,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    assert (folder / f"run-{run_id}.wandb").is_file()
    rows, summary, (info,) = wandb_history(run_dir, run_id)
    assert same([(r["_step"], r["loss_after"]) for r in rows], csv_column(run_dir, "loss_after"))
    results = json.loads((run_dir / "results.json").read_text())
    assert summary["test/mean"] == pytest.approx(results["mean"]) and summary["test/n_tasks"] == results["n_tasks"]
    assert {"algo=maml", "weighting=uniform", "data=sine", "seed=0"} <= set(info.tags)
    config = {key(i): json.loads(i.value_json) for i in info.config.update}
    assert config["train"]["iterations"] == 3 and config["seed"] == 0 and config["logger"] == "wandb"
    for name in ("results.json", "scores.csv", "metrics.csv", "table.md"):
        assert (folder / "files" / name).is_file(), name
    assert (folder / "files" / "results.json").read_text() == (run_dir / "results.json").read_text()


@pytest.mark.slow
def test_a_stopped_and_resumed_wandb_run_keeps_its_id_and_logs_each_step_once(tmp_path, cli_env):
    run_dir, env = tmp_path / "run", wandb_env(cli_env, tmp_path)
    stop_at_iteration_10(run_dir, env, "wandb", signal.SIGTERM)
    run_id = json.loads((run_dir / "tracker.json").read_text())["wandb"]["run_id"]
    resumed = subprocess.run(command(run_dir, "wandb"), capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "tracker.json").read_text())["wandb"]["run_id"] == run_id
    # One offline folder per session, of the same run: `wandb sync` uploads them as one run.
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    rows, _, _ = wandb_history(run_dir, run_id)
    assert sorted(r["_step"] for r in rows) == list(range(1, ITERATIONS + 1))
