"""Console entry points: `metarun` (a Hydra app) and `metarun-table`.

torch is imported only inside the job, so `metarun --help`, `--cfg job` and shell
completion stay fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from metarun import errors
from metarun.config import ConfigError, check, register


def config_dir() -> str:
    """conf/ shipped in the wheel, else the source tree's top-level conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "conf")


register()


def main() -> None:
    """The `metarun` command: the Hydra app, with a bad command line or output folder told in one paragraph.

    Hydra prints its own errors and exits unless HYDRA_FULL_ERROR is set, in which case it raises them;
    so it is set for the call, and the errors it raises are said here. A user who set it gets Hydra's.
    """
    before = os.environ.get("HYDRA_FULL_ERROR")
    if before == "1":
        app()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (ConfigCompositionException, OverrideParseException) as e:
        _exit(errors.composition(e), 2)
    except OSError as e:
        if e.filename is None:  # not a file Hydra made (a closed pipe on stdout, say)
            raise
        # Hydra making the output folder or writing .hydra/ in it; a job's own errors are said by the job.
        _exit(errors.cannot_write(e, "`hydra.run.dir=...` (`hydra.sweep.dir=...` for a multirun)"), 1)
    except JobFailed as e:
        _exit(_sweep_failures(e), 1)
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check(cfg)
        from hydra.errors import InstantiationException

        from metarun.files import remove_temporaries
        from metarun.results import ResultsError, build_table, load_runs
        from metarun.signals import Interrupted, redeliver
        from metarun.train import Diverged, run
        from metarun.weighting import WeightingError
        from metarun.workers import WorkerDied

        remove_temporaries(out_dir)  # what a run killed while writing left; never a complete file
        try:
            record, val = run(cfg, out_dir)
        except InstantiationException as e:
            raise ConfigError(f"a configured object could not be built: {e}") from None
        except (Diverged, WorkerDied) as e:
            fail(out_dir, str(e), 1, sweeping)
        except WeightingError as e:
            fail(out_dir, f"{e} No results were written.", 1, sweeping)
        except Interrupted as e:
            print(f"metarun: {e}", file=sys.stderr)
            redeliver(e.signum)  # the handler from before the run (default: terminate; submitit: requeue)
            sys.exit(128 + e.signum)
        except ResultsError as e:  # the folder holds a finished run's results.json that this version cannot read
            fail(out_dir, str(e), 2, sweeping)
        table = build_table(load_runs([out_dir])).to_markdown()
    except ConfigError as e:
        if not sweeping:
            _discard_if_fresh(out_dir)
        fail(out_dir, str(e), 2, sweeping)
    except OSError as e:
        if not errors.is_output(e, out_dir):
            fail(out_dir, errors.cannot_use(e), 1, sweeping)
        choose = "`hydra.sweep.dir=...`" if sweeping else "`hydra.run.dir=...`"
        fail(out_dir, errors.cannot_write(e, choose, out_dir, _kept(out_dir)), 1, sweeping)
    except JobFailed:
        raise
    except Exception as e:
        if not sweeping:
            raise
        # A bug in one job must not hide why it failed from the table: its traceback goes to the job's
        # stderr, its reason to failed.json, and the end of the sweep says which jobs failed.
        traceback.print_exc()
        fail(out_dir, f"{type(e).__name__}: {e}", 1, sweeping)
    print(table)
    print(f"results: {out_dir / 'results.json'}")
    return val


def _kept(out_dir: Path) -> str:
    """What a failed run leaves to continue from."""
    from metarun.checkpoint import FILENAME, saved_iteration

    iteration = saved_iteration(out_dir)
    if iteration is None:
        return "No results were written, and there is no checkpoint to continue from."
    return (f"No results were written; {out_dir / FILENAME} (iteration {iteration}) is intact, and the same "
            "command continues from it once the cause is fixed.")


class JobFailed(RuntimeError):
    """One job of a sweep failed; the others still run (Hydra reports failures at the end)."""

    def __init__(self, message: str, out_dir: str) -> None:
        super().__init__(message, out_dir)  # both in args: the exception is pickled back from launcher workers
        self.message, self.out_dir = message, out_dir

    def __str__(self) -> str:
        return self.message


def fail(out_dir: Path, message: str, code: int, sweeping: bool) -> NoReturn:
    print(f"metarun: error: {message}", file=sys.stderr)
    if sweeping:
        _write_failure(out_dir, message, code)
        raise JobFailed(message, str(out_dir))
    sys.exit(code)


def _exit(message: str, code: int) -> NoReturn:
    print(f"metarun: error: {message}", file=sys.stderr)
    sys.exit(code)


def _sweep_failures(e: JobFailed) -> str:
    """The end of a multirun in which jobs failed: which, and where the others' results are."""
    from metarun.results import FAILED

    sweep = Path(e.out_dir).parent
    failed = sorted(p.parent.name for p in sweep.rglob(FAILED))
    jobs = len(list(sweep.rglob(".hydra/config.yaml")))
    return errors.one_paragraph(
        f"{len(failed) or 1} of the {jobs} jobs of this multirun failed ({', '.join(failed) or Path(e.out_dir).name}; "
        f"the first: {e.message}). Every other job ran and wrote its results; `metarun-table {sweep}` marks the "
        "failed cells, and each failed job's folder holds failed.json with its reason. Fix the cause and run the "
        "same multirun again: finished jobs are not run again."
    )


def _write_failure(out_dir: Path, message: str, code: int) -> None:
    from metarun.results import write_failure

    if out_dir.is_dir():
        try:
            write_failure(out_dir, message, code)
        except OSError:  # a full disk, say: the message printed above is all there can be
            pass


def _discard_if_fresh(out_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra wrote for this failed start."""
    if not out_dir.is_dir():
        return
    names = {p.name for p in out_dir.iterdir()}
    if names <= {".hydra", "metarun.log"}:
        shutil.rmtree(out_dir, ignore_errors=True)


def table_main(argv: list[str] | None = None) -> int:
    """`metarun-table DIR...`: one table over every run found under the folders."""
    from metarun.results import ResultsError, build_table, load_runs, write_table

    parser = argparse.ArgumentParser(
        prog="metarun-table",
        description="Tabulate mean ± 95%% CI of every run (results.json) under run or multirun folders.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument("--out", type=Path, help="where to write table.{csv,md,tex} (default: the first folder)")
    parser.add_argument("--seeds", action="store_true",
                        help="a row per setting over runs that differ only in seed: the mean over seeds, its t-based "
                             "95%% CI across seeds, and each seed's CI over test tasks")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"metarun-table: error: no such folder: {', '.join(missing)}. "
              "Pass the run or multirun folders that metarun wrote (e.g. outputs/multirun/DATE/TIME).",
              file=sys.stderr)
        return 2
    try:
        runs = load_runs(args.dirs)
    except ResultsError as e:
        print(f"metarun-table: error: {e}", file=sys.stderr)
        return 2
    if runs.empty:
        print(f"metarun-table: error: no results.json under {', '.join(map(str, args.dirs))}. "
              "A run writes results.json when it finishes; pass folders of finished runs.",
              file=sys.stderr)
        return 2
    if args.seeds:
        from metarun.seeds import SeedsError, seed_table

        try:
            table = seed_table(runs)
        except SeedsError as e:
            print(f"metarun-table: error: {e}", file=sys.stderr)
            return 2
    else:
        table = build_table(runs)
    print(table.to_markdown())
    for path in write_table(table, args.out or args.dirs[0]):
        print(f"wrote {path}")
    return 0


def table_entry() -> None:
    sys.exit(table_main())
