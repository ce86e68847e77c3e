"""Experiment trackers beside metrics.csv: `logger=mlflow` and `logger=wandb`.

A run folder is one tracked run. Its id is kept in the folder's tracker.json, so that a run resumed from its
checkpoint continues the same tracked run instead of starting a second one. A tracker records what the run's
own files hold (metrics.csv rows, the config, results.json, scores.csv), never instead of them: when it fails,
at the start or mid-run, it says so once on standard error and switches itself off, and the run goes on with
the same numbers.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from metarun.config.checks import missing_logger
from metarun.config.keys import dotted
from metarun.config.schema import ConfigError
from metarun.files import atomic_write
from metarun.report.results import METRICS, RESULTS, SCORES, run_table
from metarun.run import provenance
from metarun.run.loggers import NoLog

TRACKER_FILE = "tracker.json"  # {"mlflow": {"run_id": ...}, "wandb": {"run_id": ...}}
SINGLE = "metarun"  # the experiment (W&B: the group) of a run outside a multirun


def missing(package: str, error: ImportError) -> ConfigError:
    """`logger=mlflow` or `logger=wandb` whose package the checks found but which cannot be imported."""
    return missing_logger(package, f"it cannot be imported ({error})")


class Tracker(NoLog):
    """What the trackers share: a failure is said once and switches the tracker off; rows already logged (the
    iterations up to `last`, e.g. from before a crash between two checkpoints) are not logged again."""

    name = "tracker"
    key = "tracker"  # its entry in tracker.json

    def __init__(self, out_dir: Path, where: str) -> None:
        self.out_dir, self.where, self.on, self.last = Path(out_dir), where, True, 0

    def write(self, row: dict[str, Any]) -> None:
        if self.on and row["iteration"] > self.last:
            self.safely(self.log_row, row["iteration"], numbers(row))

    def close(self, config: dict[str, Any], record: dict[str, Any] | None) -> None:
        """`record` None: the run stopped at a signal with its checkpoint saved; the tracked run keeps what it has
        (a W&B process killed with the run would lose it) for the resumed run to continue."""
        self.safely(self.finish, config, record)
        self.on = False

    def safely(self, action: Any, *args: Any) -> None:
        if not self.on:
            return
        try:
            action(*args)
        except Exception as e:  # whatever the client raises: the run must not stop for it
            self.off(e)

    def off(self, error: BaseException) -> None:
        self.on = False
        cause = " ".join(f"{type(error).__name__}: {error}".split())
        # The runner's own warning line (not an error: nothing stops), on stderr like MetricsLog's failures would be.
        sys.stderr.write(
            f"metarun: warning: {self.name} at {self.where} failed ({cause[:500]}). This run goes on without "
            f"{self.name}; its own files in {self.out_dir} (metrics.csv, results.json, scores.csv) stay complete.\n")
        sys.stderr.flush()

    def log_row(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def finish(self, config: dict[str, Any], record: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def remember(self, run_id: str) -> None:
        """Keep the tracked run's id in tracker.json, beside the other trackers' ids."""
        path = self.out_dir / TRACKER_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        saved[self.key] = {"run_id": run_id, "where": self.where}
        atomic_write(path, json.dumps(saved, indent=2) + "\n")


def stored_id(out_dir: Path, key: str) -> str | None:
    """The run id that tracker.json keeps for a tracker (`mlflow`, `wandb`), if any."""
    path = Path(out_dir) / TRACKER_FILE
    try:
        return json.loads(path.read_text())[key]["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """A logged row's metrics: its numbers, the iteration (the step) aside."""
    return {k: float(v) for k, v in row.items()
            if k != "iteration" and isinstance(v, int | float) and not isinstance(v, bool)}


def csv_rows(out_dir: Path, after: int) -> list[tuple[int, dict[str, float]]]:
    """metrics.csv's rows of the iterations after `after`: what a tracker missed (a resumed run, where the tracked
    run is new or was off for a while) is logged from the run's own record."""
    try:
        with open(Path(out_dir) / METRICS, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("iteration", "").isdigit() and int(r["iteration"]) > after]
    except OSError:
        return []
    return [(int(r["iteration"]), {k: float(v) for k, v in r.items() if k != "iteration" and v not in ("", None)})
            for r in rows]


def sweep_name(out_dir: Path) -> str | None:
    """The multirun's sweep folder of a job folder (Hydra writes multirun.yaml there; an Optuna sweep records
    mode MULTIRUN in the job's .hydra/hydra.yaml), relative to the current folder where it lies below it; None
    for a single run."""
    out_dir = Path(out_dir).absolute()
    sweep = out_dir.parent
    if not (sweep / "multirun.yaml").is_file():
        try:
            mode = OmegaConf.select(OmegaConf.load(out_dir / ".hydra" / "hydra.yaml"), "hydra.mode")
        except Exception:  # no such file (a run made outside Hydra), or not one Hydra wrote
            mode = None
        if str(mode) not in ("MULTIRUN", "RunMode.MULTIRUN"):
            return None
    try:
        return str(sweep.relative_to(Path.cwd()))
    except ValueError:
        return str(sweep)


def tags(cfg: DictConfig) -> dict[str, str]:
    """What a run is filtered by in a tracker: algorithm, weighting, data, seed, and the code's commit."""
    found = {"algo": OmegaConf.select(cfg, "algo.name"), "weighting": OmegaConf.select(cfg, "weighting.name"),
             "data": OmegaConf.select(cfg, "data.name"), "seed": OmegaConf.select(cfg, "seed"),
             "commit": provenance.running_code().commit}
    return {k: str(v) for k, v in found.items() if v is not None}


def reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise OSError at once if an http(s) tracking server does not accept a connection (the client would retry
    for minutes); other stores are found out by their first call."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout).close()


def run_files(out_dir: Path, record: dict[str, Any]) -> dict[str, Path | str]:
    """A finished run's files as a tracker keeps them (the config aside): name -> the file, or the text of one."""
    files: dict[str, Path | str] = {name: Path(out_dir) / name for name in (RESULTS, SCORES, METRICS)
                                    if (Path(out_dir) / name).is_file()}
    return {**files, "table.md": run_table(record) + "\n"}


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The test's mean, its 95% interval's half-width (none for one task) and the number of test tasks."""
    found = {"test/mean": record.get("mean"), "test/ci95": record.get("ci95"), "test/n_tasks": record.get("n_tasks")}
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float)}


class MLflowLog(Tracker):
    """One MLflow run per run folder, in the experiment named after its sweep (`metarun` for a single run): the
    config as params (values past MLflow's length limit cut, with the whole config as the artifact config.yaml),
    each logged row as metrics at its iteration, the test's numbers as metrics, the run's files as artifacts.

    The store is MLFLOW_TRACKING_URI, else MLflow's own default in the current folder. A server that goes away
    mid-run is noticed once MLflow's client has given up retrying (MLFLOW_HTTP_REQUEST_MAX_RETRIES)."""

    name, key = "MLflow", "mlflow"
    PARAM_LIMIT = 6000  # characters of a param value (MLflow's MAX_PARAM_VAL_LENGTH)

    def __init__(self, cfg: DictConfig, out_dir: Path, resumed: bool) -> None:
        try:
            import mlflow
            from mlflow import MlflowClient
        except ImportError as e:
            raise missing("mlflow", e) from None
        super().__init__(out_dir, mlflow.get_tracking_uri())
        self.run_id: str | None = None
        self.safely(self.start, MlflowClient, cfg, resumed)

    def start(self, client_class: Any, cfg: DictConfig, resumed: bool) -> None:
        from mlflow.entities import Param

        reachable(self.where)
        self.client = client = client_class(tracking_uri=self.where)
        earlier = stored_id(self.out_dir, self.key)
        run = self.found(earlier)
        if resumed and run is not None:  # the checkpoint's run: continue it
            self.run_id = earlier
            client.update_run(self.run_id, status="RUNNING")
            self.last = self.last_step(run)
        else:
            if run is not None:  # an attempt that left no checkpoint: the run starts over, so does its record
                client.delete_run(earlier)
            experiment = sweep_name(self.out_dir) or SINGLE
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.create_experiment(experiment)
            self.run_id = client.create_run(experiment_id, tags=tags(cfg), run_name=self.out_dir.name).info.run_id
            self.remember(self.run_id)
            config = OmegaConf.to_container(cfg, resolve=True)
            params = [Param(k[:250], self.param_value(v)) for k, v in dotted(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                client.log_batch(self.run_id, params=params[i:i + 100])
            client.log_text(self.run_id, OmegaConf.to_yaml(config), "config.yaml")
        self.log_rows(csv_rows(self.out_dir, self.last))  # what it missed, e.g. resuming into a new MLflow run
        atexit.register(self.stopped)

    def found(self, run_id: str | None) -> Any:
        """The MLflow run of that id in this store, unless it is deleted (or there is none)."""
        if run_id is None:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception as e:  # MLflow's "not found"; an unreachable store fails its next call too
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")) or "not found" in str(e).lower():
                return None
            raise
        return run if run.info.lifecycle_stage == "active" else None

    def create_experiment(self, name: str) -> str:
        try:
            return self.client.create_experiment(name)
        except Exception:  # another job of the sweep created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def param_value(self, value: Any) -> str:
        text = str(value)
        if len(text) <= self.PARAM_LIMIT:
            return text
        note = " ... (cut at MLflow's limit; the whole config is the artifact config.yaml)"
        return text[:self.PARAM_LIMIT - len(note)] + note

    def last_step(self, run: Any) -> int:
        """The last iteration logged to the run: every row train.py logs has `seconds`."""
        keys = ["seconds"] if "seconds" in run.data.metrics else list(run.data.metrics)
        return max((m.step for k in keys for m in self.client.get_metric_history(self.run_id, k)), default=0)

    def log_rows(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        if not rows:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for step, row in rows for k, v in row.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        self.last = max([self.last, *(step for step, _ in rows)])

    def log_row(self, step: int, metrics: dict[str, float]) -> None:
        self.log_rows([(step, metrics)])

    def finish(self, config: dict[str, Any], record: dict[str, Any] | None) -> None:
        atexit.unregister(self.stopped)
        if record is None:
            self.stopped()
            return
        self.log_rows([(int(record.get("iterations") or self.last), final_metrics(record))])
        for name, item in run_files(self.out_dir, record).items():
            if isinstance(item, Path):
                self.client.log_artifact(self.run_id, str(item))
            else:
                self.client.log_text(self.run_id, item, name)
        self.client.set_terminated(self.run_id, "FINISHED")

    def off(self, error: BaseException) -> None:
        super().off(error)
        atexit.unregister(self.stopped)

    def stopped(self) -> None:
        """Stopped before the run finished (at a signal, or at exit after a failure): not left `RUNNING`; a resumed
        run sets it running again."""
        try:
            self.client.set_terminated(self.run_id, "KILLED")
        except Exception:  # exiting anyway: the store says RUNNING until the run is resumed
            pass


class WandbLog(Tracker):
    """One W&B run per run folder, its files under the folder's wandb/: the config, each logged row at its
    iteration, the test's numbers in the summary, the run's files in the run's files. Offline (`wandb sync`
    uploads it later) unless W&B is configured by WANDB_MODE or WANDB_API_KEY. The project is WANDB_PROJECT, else
    `metarun`; the jobs of a sweep share a group named after the sweep folder."""

    name, key = "W&B", "wandb"

    def __init__(self, cfg: DictConfig, out_dir: Path, resumed: bool) -> None:
        try:
            import wandb
        except ImportError as e:
            raise missing("wandb", e) from None
        configured = "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ
        self.mode = None if configured else "offline"
        offline = self.mode == "offline" or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
        where = (f"{Path(out_dir) / 'wandb'} (offline)" if offline
                 else os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
        super().__init__(out_dir, where)
        self.safely(self.start, wandb, cfg, resumed)

    def start(self, wandb: Any, cfg: DictConfig, resumed: bool) -> None:
        earlier = stored_id(self.out_dir, self.key) if resumed else None
        settings = wandb.Settings(silent=True, console="off", disable_git=True, disable_job_creation=True)
        self.run = wandb.init(
            project=None if os.environ.get("WANDB_PROJECT") else SINGLE, group=sweep_name(self.out_dir),
            name=self.out_dir.name, id=earlier, resume="allow" if earlier else None, dir=str(self.out_dir),
            mode=self.mode, config=OmegaConf.to_container(cfg, resolve=True), allow_val_change=True,
            tags=[f"{k}={v}"[:64] for k, v in tags(cfg).items()], reinit="create_new", settings=settings)
        self.remember(self.run.id)
        self.last = max(0, self.run.step - 1)  # online, a resumed run starts after the server's last step

    def log_row(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def finish(self, config: dict[str, Any], record: dict[str, Any] | None) -> None:
        if record is None:
            self.run.mark_preempting()  # to be resumed
            self.run.finish()
            return
        self.run.summary.update(final_metrics(record))
        # Files in the run's files folder are the run's files (uploaded at the end, or by `wandb sync`).
        for name, item in run_files(self.out_dir, record).items():
            if isinstance(item, Path):
                shutil.copyfile(item, Path(self.run.dir) / name)
            else:
                (Path(self.run.dir) / name).write_text(item)
        self.run.finish()
