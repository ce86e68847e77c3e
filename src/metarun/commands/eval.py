"""`metarun-eval RUN_DIR [overrides]`: test a finished run's parameters under another test setting, no training.

The run's own config (`RUN_DIR/.hydra/config.yaml`) is the base and the overrides change its test setting;
each evaluation writes `RUN_DIR/eval/<overrides>/` (results.json, scores.csv) that `metarun-table` and
`metarun-compare` read like any run's. It is a Hydra app, so `-m` sweeps go through Hydra's launchers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from metarun import messages
from metarun.commands.exits import USAGE, error, fail, quiet_pipe
from metarun.config.schema import ConfigError
from metarun.report.results import RESULTS, run_table
from metarun.run import rundir
from metarun.run.reevaluate import finished_run, hydra_argv

PROG = "metarun-eval"
RUN_ENV = "METARUN_EVAL_RUN"  # the evaluated run's folder, for the Hydra job


def usage() -> str:
    return ("usage: metarun-eval RUN_DIR [-m] [key=value ...]: test the parameters of the finished run in RUN_DIR "
            "under another test setting (e.g. `ways=20`, `shots=5`, `eval.steps=10`, `eval.tasks=2000`), writing "
            "RUN_DIR/eval/<overrides>/results.json; see docs/outputs.md, Use what was trained.")


def main() -> None:
    """The `metarun-eval` command."""

    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("-"):
        print(usage(), file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)  # usage, not an error
        sys.exit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    try:
        run_dir = finished_run(Path(argv[0]))
        rest = hydra_argv(argv[1:], OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    except ConfigError as e:
        sys.exit(fail(e, PROG))
    os.environ[RUN_ENV] = str(run_dir)
    folder = run_dir / "eval"
    flags = [a for a in rest if a.startswith("-")]  # before the overrides, as Hydra's parser wants them
    sys.argv = [sys.argv[0], *flags, "--config-dir", str(run_dir / ".hydra"), "--config-name", "config",
                f"hydra.run.dir={rundir.quoted(folder)}", f"hydra.sweep.dir={rundir.quoted(folder)}",
                "hydra.sweep.subdir=${hydra.job.override_dirname}",
                "hydra/job_logging=disabled", "hydra/hydra_logging=disabled", "hydra.job.chdir=false",
                "hydra.output_subdir=null", "hydra.job.name=metarun-eval", *(a for a in rest if not a.startswith("-"))]
    quiet_pipe(_app)


def _app() -> None:
    import hydra
    from hydra.errors import ConfigCompositionException, OverrideParseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors, said here in one paragraph
    try:
        hydra.main(config_path=None, config_name=None, version_base="1.3")(job)()
    except (ConfigCompositionException, OverrideParseException) as e:
        sys.exit(error(PROG, messages.composition(e), USAGE))


def job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    run_dir = Path(os.environ[RUN_ENV])
    out_dir = run_dir / "eval" / (hc.job.override_dirname or "as_trained")
    from metarun.run.learner import LearnerError
    from metarun.run.reevaluate import reevaluate

    try:
        record = reevaluate(run_dir, cfg, out_dir)
    except (ConfigError, LearnerError) as e:  # LearnerError: the run's checkpoint cannot be read
        sys.exit(fail(e, PROG))

    print(run_table(record))
    print(f"results: {out_dir / RESULTS}")
