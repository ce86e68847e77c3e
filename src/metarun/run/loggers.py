"""Optional loggers beside metrics.csv (always written): `logger=tensorboard` adds TensorBoard scalars
and, at the end, the flattened config as hyperparameters with the test metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metarun.config.schema import ConfigError


class NoLog:
    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self, config: dict[str, Any], record: dict[str, Any]) -> None:
        pass


class TensorBoardLog(NoLog):
    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "`logger=tensorboard` needs the tensorboard package, which is not installed. Install it with "
                '`pip install "metarun[tensorboard]"`, or use `logger=csv`.'
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "iteration" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, row["iteration"])
        self.writer.flush()

    def close(self, config: dict[str, Any], record: dict[str, Any]) -> None:
        hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in _flat(config).items()}
        self.writer.add_hparams(hparams, {"test/mean": record["mean"], "test/ci95": record["ci95"]},
                                run_name="hparams")
        self.writer.close()


def tensorboard_log(cfg: DictConfig, out_dir: Path) -> NoLog:
    return TensorBoardLog(Path(out_dir) / "tensorboard") if cfg.logger == "tensorboard" else NoLog()


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
