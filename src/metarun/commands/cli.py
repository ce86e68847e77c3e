"""Console entry points: `metarun` (a Hydra app) and `metarun-table`.

torch is imported only inside the job, and only once the run folder has been checked: `metarun --help`,
`--cfg job`, `--version`, shell completion and the report of a finished run stay fast.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from metarun import messages
from metarun.commands.exits import FAILED, after_rank_zero, quiet_pipe, rank_zero, say, stop
from metarun.config.checks import check
from metarun.config.schema import ConfigError
from metarun.config.store import config_dir, register
from metarun.run import rundir
from metarun.version import __version__

PROG = "metarun"



def main() -> None:
    """The `metarun` command: the Hydra app, with a bad command line or output folder told in one paragraph.

    Hydra prints its own errors and exits unless HYDRA_FULL_ERROR is set, in which case it raises them;
    so it is set for the call, and the errors it raises are said here. A user who set it gets Hydra's.
    """
    argv = sys.argv[1:]
    if "--version" in argv[: argv.index("--") if "--" in argv else len(argv)]:
        print(versions())
        return
    if not sys.stderr.isatty() and "FORCE_COLOR" not in os.environ:
        os.environ.setdefault("NO_COLOR", "1")  # Optuna's log lines: no colour codes in a file or a pipe
    try:
        register()
        sys.argv[1:] = ranks_argv(rundir.resume_argv(argv))
    except ConfigError as e:
        _exit(str(e), 2)
    if not rank_zero():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  the ranks other than 0 print nothing (rank 0 says it)
    quiet_pipe(_main)


def ranks_argv(argv: list[str]) -> list[str]:
    """Under torchrun, one run folder for every rank, and only rank 0's Hydra making it.

    Hydra's default folder is named from the clock, which ranks started a second apart would read differently,
    so rank 0's clock names it (unless a folder is given). The other ranks read the run's folder
    (RANK_RUN_DIR) but give Hydra a private one of their own, so a refused run leaves no folder behind.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or {"-m", "--multirun"} & set(argv):
        return argv
    from metarun.core import distributed

    given = next((a.partition("=")[2] for a in argv if _override_key(a) == "hydra.run.dir"), None)
    if given is None:
        timeout = next((a.partition("=")[2] for a in argv if _override_key(a) == "exec.timeout"), "300")
        try:
            distributed.coordinate(float(timeout))
        except ValueError:
            raise ConfigError(f"`exec.timeout={timeout}` is invalid: a time in seconds must be a number greater "
                              "than 0. Set e.g. `exec.timeout=300`.") from None
        given = f"outputs/runs/{distributed.shared_now()}"
    argv = [a for a in argv if _override_key(a) != "hydra.run.dir"]
    if rank_zero():
        return [*argv, f"hydra.run.dir={given}"]
    import atexit
    import shutil
    import tempfile

    os.environ[RANK_RUN_DIR] = str(Path(given.strip("'\"")).absolute())
    private = tempfile.mkdtemp(prefix=f"metarun-rank{os.environ.get('RANK')}-")
    atexit.register(shutil.rmtree, private, True)
    return [*argv, f"hydra.run.dir={private}"]


RANK_RUN_DIR = "METARUN_RANK_RUN_DIR"  # the run's folder, for the ranks other than 0


def _override_key(arg: str) -> str:
    return arg.partition("=")[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else ""


def _main() -> None:
    before = os.environ.get("HYDRA_FULL_ERROR")
    if before == "1":
        app()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (ConfigCompositionException, OverrideParseException) as e:
        _exit(messages.composition(e), 2)
    except BrokenPipeError:
        raise
    except OSError as e:
        if e.filename is None:
            raise
        # Hydra making the output folder; a job's own errors are said by the job.
        _exit(messages.cannot_write(e, "`hydra.run.dir=...` (`hydra.sweep.dir=...` for a multirun)"), 1)
    except JobFailed as e:
        _exit(_sweep_failures(e), 1)
    except ValueError as e:
        if not str(e).startswith("Only one of --run, --multirun"):
            raise
        _exit(messages.one_command(), 2)
    except KeyboardInterrupt:  # before a job started (composing) or between the jobs of a sweep
        _say("stopped by Ctrl-C before a run started; nothing was written.", 130)
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def versions() -> str:
    """metarun's version with torch's, the CUDA version torch was built for, Hydra's and Python's.

    torch's are read from its version.py without importing torch (3 s)."""
    import ast
    import importlib.util
    import platform

    torch_version, cuda = "not installed", None
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin:
        try:
            tree = ast.parse((Path(spec.origin).parent / "version.py").read_text())
            found = {t.id: ast.literal_eval(node.value) for node in tree.body
                     if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
                     for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                     if isinstance(t, ast.Name) and t.id in ("__version__", "cuda")}
        except (OSError, SyntaxError, ValueError):
            import torch

            found = {"__version__": torch.__version__, "cuda": torch.version.cuda}
        torch_version, cuda = found.get("__version__", "unknown"), found.get("cuda")
    build = f"CUDA {cuda} build" if cuda else "CPU-only build (no CUDA)"
    return (f"metarun {__version__} (torch {torch_version}, {build}; Hydra {hydra.__version__}; "
            f"Python {platform.python_version()})")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(os.environ.get(RANK_RUN_DIR) or hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    choose = "`hydra.sweep.dir=...`" if sweeping else "`hydra.run.dir=...`"
    resume = f"metarun --resume {shlex.quote(str(_resume_dir(out_dir, sweeping)))}"
    accepted = []

    def accept(resumed_from: int | None = None) -> None:
        if rank_zero():
            rundir.accept(out_dir, cfg)
            # Said at once: the progress bar shows only on a terminal, and a piped run would say nothing until it ends.
            iterations = cfg.train.iterations
            began = (f"continuing from iteration {resumed_from} of {iterations}" if resumed_from is not None
                     else f"training for {iterations} iterations")
            print(f"run folder: {out_dir} ({began})", flush=True)
        accepted.append(True)

    if sweeping and rank_zero() and rundir.fresh(out_dir):
        # A new job folder of a sweep records its config at once, as Hydra would: a job killed before it trains
        # still shows in the table (as missing). A run's folder is written only once the run is accepted.
        rundir.write_hydra_files(out_dir, cfg)
    try:
        check(cfg)
        if hydra_cfg.output_subdir is not None:
            raise ConfigError(
                f"`hydra.output_subdir={hydra_cfg.output_subdir}` makes Hydra write the config into the run folder "
                "before metarun has checked that the folder may take this run, overwriting the record of a run "
                "already there. metarun writes .hydra/ itself once a run is accepted: leave hydra.output_subdir "
                "unset.")
        finished = rundir.claim(out_dir, OmegaConf.to_container(cfg, resolve=True), choose)
        if finished is None:
            _train(cfg, out_dir, sweeping, accept, resume)
        from metarun.report.results import RESULTS, ResultsError, read_results, run_table

        try:
            record = read_results(out_dir / RESULTS)
            table = run_table(record)
        except ResultsError as e:  # the folder holds a finished run's results.json that this version cannot read
            fail(out_dir, str(e), 2, sweeping)
    except ConfigError as e:
        if not accepted and not sweeping and rank_zero():
            rundir.discard_created(out_dir)
        fail(out_dir, str(e), 2, sweeping, None if isinstance(e, rundir.FolderTaken) else cfg)
    except OSError as e:
        if not messages.is_output(e, out_dir):
            fail(out_dir, messages.cannot_use(e), 1, sweeping, cfg)
        fail(out_dir, messages.cannot_write(e, choose, out_dir, _kept(out_dir, resume)), 1, sweeping, cfg)
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one outside it: stop at once
        if not accepted:
            if not sweeping and rank_zero():
                rundir.discard_created(out_dir)
            _say("stopped by Ctrl-C before the run started; nothing was written.", 130)
        _say(f"stopped at once by Ctrl-C. {_kept(out_dir, resume, '')}", 130)
    except JobFailed:
        raise
    except Exception as e:
        if not sweeping:
            raise
        # A bug in one job must not hide why it failed from the table: its traceback goes to the job's
        # stderr, its reason to failed.json, and the end of the sweep says which jobs failed.
        traceback.print_exc()
        fail(out_dir, f"{type(e).__name__}: {e}", 1, sweeping, cfg)
    if finished is not None:
        print(f"run folder: {out_dir} holds this run's results already (nothing was run again):")
    print(table)
    print(f"results: {out_dir / RESULTS}")
    return record.get("val_mean", record["mean"])


def _train(cfg: DictConfig, out_dir: Path, sweeping: bool, accept: Callable[[], None], resume: str) -> None:
    """Train and test into `out_dir`, saying in one paragraph why not if it cannot go on."""
    from hydra.errors import InstantiationException

    from metarun.core.distributed import RankFailed
    from metarun.run.heap import keep_freed_memory
    from metarun.run.signals import Interrupted, describe, redeliver
    from metarun.run.train import Diverged, run
    from metarun.weighting import WeightingError

    keep_freed_memory()  # this process is the run's: its steps reuse the host memory they free (run/heap.py)
    try:
        run(cfg, out_dir, accept)
    except InstantiationException as e:
        if isinstance(e.__cause__, ConfigError):  # a group option's own check of its settings (e.g. a weighting's)
            raise e.__cause__ from None
        raise ConfigError(f"a configured object could not be built: {e}") from None
    except Diverged as e:
        fail(out_dir, str(e), 1, sweeping, cfg)
    except RankFailed as e:  # each rank says what it saw: which one failed shows in theirs
        if not rank_zero():
            say(PROG, f"error: {e}", every_rank=True)
            sys.exit(FAILED)
        fail(out_dir, str(e), 1, sweeping, cfg)
    except WeightingError as e:
        fail(out_dir, f"{e} No results were written.", 1, sweeping, cfg)
    except Interrupted as e:
        say(PROG, f"stopped by {describe(e.signum)} after iteration {e.iteration}; its checkpoint is saved. "
                  f"To continue: {resume}")
        if e.signum != signal.SIGINT:  # to the handler from before (default: terminate; submitit: requeue)
            redeliver(e.signum)
        sys.exit(128 + e.signum)


def _resume_dir(out_dir: Path, sweeping: bool) -> Path:
    """The folder `metarun --resume` takes: the run's, or in a multirun the sweep's."""
    if not sweeping:
        return out_dir
    return Path(str(HydraConfig.get().sweep.dir)).absolute()


def _kept(out_dir: Path, resume: str, when: str = " once the cause is fixed") -> str:
    """What a failed run leaves to continue from."""
    from metarun.run.checkpoint import FILENAME, saved_iteration

    iteration = saved_iteration(out_dir)
    if iteration is None:
        return f"No results were written, and there is no checkpoint to continue from (`{resume}` starts it again)."
    return (f"No results were written; {out_dir / FILENAME} (iteration {iteration}) is intact, and `{resume}` "
            f"continues from it{when}.")


class JobFailed(RuntimeError):
    """One job of a sweep failed; the others still run (Hydra reports failures at the end)."""

    def __init__(self, message: str, out_dir: str) -> None:
        super().__init__(message, out_dir)  # both in args: the exception is pickled back from launcher workers
        self.message, self.out_dir = message, out_dir

    def __str__(self) -> str:
        return self.message


def fail(out_dir: Path, message: str, code: int, sweeping: bool, cfg: DictConfig | None = None) -> NoReturn:
    """Say why the run stops; in a sweep, also record it in the job's folder for the table, unless the
    folder holds another run (`cfg=None`) or finished results."""
    say(PROG, f"error: {message}")  # every rank of a distributed run finds the same error; rank 0 says it
    if sweeping:
        if cfg is not None and rank_zero():
            _write_failure(out_dir, cfg, message, code)
        raise JobFailed(message, str(out_dir))
    after_rank_zero()
    sys.exit(code)


def _exit(message: str, code: int) -> NoReturn:
    stop(PROG, f"error: {message}", code)


def _say(message: str, code: int) -> NoReturn:
    stop(PROG, message, code)


def _sweep_failures(e: JobFailed) -> str:
    """The end of a multirun in which jobs failed: which, and where the others' results are."""
    from metarun.report.results import FAILED

    sweep = Path(e.out_dir).parent
    failed = sorted(p.parent.name for p in sweep.rglob(FAILED))
    jobs = max(len(list(sweep.rglob(".hydra/config.yaml"))), 1)
    names = ", ".join(failed) or Path(e.out_dir).name
    return messages.one_paragraph(
        f"{len(failed) or 1} of the {jobs} jobs of this multirun failed ({names}; "
        f"the first: {e.message}). Every other job ran and wrote its results; `metarun-table {sweep}` marks the "
        "failed cells, and each failed job's folder holds failed.json with its reason. Fix the cause and run the "
        f"same multirun again (`metarun --resume {shlex.quote(str(sweep))}`): finished jobs are not run again."
    )


def _write_failure(out_dir: Path, cfg: DictConfig, message: str, code: int) -> None:
    """failed.json, and the config when the folder is new, so the table shows the job; never over results."""
    from metarun.report.results import RESULTS, write_failure

    if not out_dir.is_dir() or (out_dir / RESULTS).is_file():
        return
    try:
        if rundir.fresh(out_dir):
            rundir.write_hydra_files(out_dir, cfg)
        write_failure(out_dir, message, code)
    except OSError:  # a full disk, say: the message printed above is all there can be
        pass


class SweepSummary(Callback):
    """At the end of a multirun, where its results are: with a launcher such as submitit, the jobs' own
    output (their tables) goes to the launcher's log files, not to this terminal."""

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        sweep = Path(str(config.hydra.sweep.dir)).absolute()
        finished = len(list(sweep.glob("**/results.json")))
        print(f"metarun: {finished} job folder(s) under {sweep} hold results.json; one table of them all: "
              f"metarun-table {shlex.quote(str(sweep))}")
