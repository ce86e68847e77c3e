"""Console entry points: `metarun` (a Hydra app) and `metarun-table`.

torch is imported only inside the job, so `metarun --help`, `--cfg job` and shell
completion stay fast.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from metarun.config import ConfigError, check, register


def config_dir() -> str:
    """conf/ shipped in the wheel, else the source tree's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "conf")


register()


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check(cfg)
        from hydra.errors import InstantiationException

        from metarun.results import build_table, load_runs
        from metarun.signals import Interrupted, redeliver
        from metarun.train import Diverged, run

        try:
            record, val = run(cfg, out_dir)
        except InstantiationException as e:
            raise ConfigError(f"a configured object could not be built: {e}") from None
        except Diverged as e:
            fail(out_dir, str(e), 1, sweeping)
        except Interrupted as e:
            print(f"metarun: {e}", file=sys.stderr)
            redeliver(e.signum)  # the handler from before the run (default: terminate; submitit: requeue)
            sys.exit(128 + e.signum)
    except ConfigError as e:
        if not sweeping:
            _discard_if_fresh(out_dir)
        fail(out_dir, str(e), 2, sweeping)
    except JobFailed:
        raise
    except Exception as e:
        if sweeping:  # a bug in one job must not hide why it failed from the table
            _write_failure(out_dir, f"{type(e).__name__}: {e}", 1)
        raise
    print(build_table(load_runs([out_dir])).to_markdown())
    print(f"results: {out_dir / 'results.json'}")
    return val


class JobFailed(RuntimeError):
    """One job of a sweep failed; the others still run (Hydra reports failures at the end)."""


def fail(out_dir: Path, message: str, code: int, sweeping: bool) -> NoReturn:
    print(f"metarun: error: {message}", file=sys.stderr)
    if sweeping:
        _write_failure(out_dir, message, code)
        raise JobFailed(message)
    sys.exit(code)


def _write_failure(out_dir: Path, message: str, code: int) -> None:
    from metarun.results import write_failure

    if out_dir.is_dir():
        write_failure(out_dir, message, code)


def _discard_if_fresh(out_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra wrote for this failed start."""
    if not out_dir.is_dir():
        return
    names = {p.name for p in out_dir.iterdir()}
    if names <= {".hydra", "metarun.log"}:
        shutil.rmtree(out_dir, ignore_errors=True)


def table_main(argv: list[str] | None = None) -> int:
    """`metarun-table DIR...`: one table over every run found under the folders."""
    from metarun.results import build_table, load_runs, write_table

    parser = argparse.ArgumentParser(
        prog="metarun-table",
        description="Tabulate mean ± 95%% CI of every run (results.json) under run or multirun folders.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument("--out", type=Path, help="where to write table.{csv,md,tex} (default: the first folder)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"metarun-table: error: no such folder: {', '.join(missing)}. "
              "Pass the run or multirun folders that metarun wrote (e.g. outputs/multirun/DATE/TIME).",
              file=sys.stderr)
        return 2
    runs = load_runs(args.dirs)
    if runs.empty:
        print(f"metarun-table: error: no results.json under {', '.join(map(str, args.dirs))}. "
              "A run writes results.json when it finishes; pass folders of finished runs.",
              file=sys.stderr)
        return 2
    table = build_table(runs)
    print(table.to_markdown())
    for path in write_table(table, args.out or args.dirs[0]):
        print(f"wrote {path}")
    return 0


def table_entry() -> None:
    sys.exit(table_main())
