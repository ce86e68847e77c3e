"""Optional loggers beside metrics.csv (always written): `logger=tensorboard` adds TensorBoard scalars
and, at the end, the flattened config as hyperparameters with the test metric; `logger=mlflow` and
`logger=wandb` track the run in MLflow or W&B (metarun.run.trackers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metarun.config.checks import missing_logger
from metarun.config.keys import dotted


class NoLog:
    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self, config: dict[str, Any] | None = None, record: dict[str, Any] | None = None) -> None:
        """`record` None: the run stopped at a signal, its checkpoint saved, before any results."""


class TensorBoardLog(NoLog):
    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise missing_logger("tensorboard", f"it cannot be imported ({e})") from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "iteration" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, row["iteration"])
        self.writer.flush()

    def close(self, config: dict[str, Any], record: dict[str, Any] | None) -> None:
        if record is None:
            self.writer.close()
            return
        hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in dotted(config).items()}
        self.writer.add_hparams(hparams, {"test/mean": record["mean"], "test/ci95": record["ci95"]},
                                run_name="hparams")
        self.writer.close()


def tracker(cfg: DictConfig, out_dir: Path, resumed: bool) -> NoLog:
    """The logger `cfg.logger` names beside metrics.csv (csv: none). `resumed`: the run continues from its
    checkpoint, and a tracker continues the tracked run that the folder's tracker.json names."""
    if cfg.logger == "tensorboard":
        return TensorBoardLog(Path(out_dir) / "tensorboard")
    if cfg.logger in ("mlflow", "wandb"):
        from metarun.run.trackers import MLflowLog, WandbLog

        return (MLflowLog if cfg.logger == "mlflow" else WandbLog)(cfg, Path(out_dir), resumed)
    return NoLog()


