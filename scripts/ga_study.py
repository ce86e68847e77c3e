"""Does gradient agreement help? Run the sine study (conf/study/ga_sine.yaml) and report it, paired.

    OMP_NUM_THREADS=1 python scripts/ga_study.py                 # 144 runs through Hydra's joblib launcher
    python scripts/ga_study.py --report-only --out outputs/study/ga_sine
    python scripts/ga_study.py --out /tmp/tiny -- train.iterations=3 eval.tasks=20   # a try at a tiny budget

The runs go through one Hydra multirun (`metarun -m +study=ga_sine`, joblib launcher, one thread per job);
a rerun in the same folder finds the finished jobs and runs only the missing ones. The report compares
agreement with uniform weighting in every setting, seed paired with seed, each pair on the same 1,000 test
tasks (metarun.report.study), and writes ga_study.md and ga_study.csv into the folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from metarun.files import atomic_write
from metarun.report.compare import CompareError
from metarun.report.results import ResultsError
from metarun.report.study import paired_study, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Config overrides for every run go after `--`.")
    parser.add_argument("--out", type=Path, default=Path("outputs/study/ga_sine"), help="the sweep folder")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once (one thread each); default 2")
    parser.add_argument("--report-only", action="store_true", help="run nothing; report what the folder holds")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1:]
    code = 0
    if not args.report_only:
        command = [sys.executable, "-m", "metarun", "-m", "+study=ga_sine", f"hydra.sweep.dir={args.out}",
                   f"hydra.launcher.n_jobs={args.jobs}", *overrides]
        print(" ".join(command), flush=True)
        code = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}).returncode
    try:
        table = paired_study(args.out, "weighting", "agreement", "uniform")
    except (CompareError, ResultsError) as e:
        print(f"ga_study: error: {e}", file=sys.stderr)
        return 2
    common = " ".join(f"{k}={v}" for k, v in table.attrs.get("common", {}).items())
    lines = ["# Does gradient agreement help? (sine, agreement − uniform, seed paired with seed)", "",
             summary(table, "agreement") + ".", *([f"Every run: {common}."] if common else []), "",
             table.to_markdown(index=False, disable_numparse=True)]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write(args.out / "ga_study.md", text)
    atomic_write(args.out / "ga_study.csv", table.to_csv(index=False))
    print(f"wrote {args.out / 'ga_study.md'} and ga_study.csv")
    return code


if __name__ == "__main__":
    sys.exit(main())
