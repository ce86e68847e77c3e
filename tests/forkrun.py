"""Run the `metarun` command many times, fast, each time in a real process that can be patched or killed.

A fresh `python -m metarun` spends about 4 s importing torch and Hydra, which would make a catalogue of
fifty runs take minutes on two cores. Instead one driver process (this file run as a script) imports them
once, never runs a torch op (so forking it is safe), and forks a child per command. The child is a
separate process with its own exit code: it can patch a function first (to kill itself with SIGKILL at a
chosen moment, or to fill the disk), and what it prints goes to files the test reads.

Patches are the functions named in PATCHES below; `Forker.run(..., patch=("name", {kwargs}))`.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    returncode: int  # negative: killed by that signal, as subprocess reports it
    stdout: str
    stderr: str

    def error(self, prog: str = "metarun") -> str:
        """The `PROG: error: ...` paragraph: the only one, on one line, and the last thing printed."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        said = [line for line in lines if line.startswith(f"{prog}: error: ")]
        assert len(said) == 1 and lines[-1] == said[0], self.stderr
        return said[0]


class Forker:
    """The parent's handle on the driver: one command at a time, over the driver's stdin and stdout."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.count = 0
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=workdir)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, *argv: str, patch: tuple[str, dict] | None = None, entry: str = "metarun") -> Result:
        """`metarun ARGV...` (entry="table": `metarun-table ARGV...`, "eval": `metarun-eval ARGV...`), after applying
        `patch` in the child."""
        self.count += 1
        log = self.workdir / f"job{self.count}"
        job = {"argv": list(argv), "patch": patch, "entry": entry, "log": str(log)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the fork driver died"
        code = json.loads(reply)["returncode"]
        return Result(code, Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---- patches, applied in the child before the command runs --------------------------------------------------

def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _nth(call: int):
    """A function that returns True on its `call`-th call (from 1) and False on every other."""
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == call

    return hit


def kill_at_sample(split: str, call: int) -> None:
    """SIGKILL at the `call`-th task batch drawn from `split` (train: that iteration; val/test: evaluation)."""
    from metarun.data.sine import SineWaves

    real = SineWaves.sample
    hit = _nth(call)

    def sample(self, split_, *args, **kwargs):
        if split_ == split and hit():
            _die()
        return real(self, split_, *args, **kwargs)

    SineWaves.sample = sample


def kill_at_step(call: int) -> None:
    """SIGKILL inside the `call`-th outer optimiser step (Adam, MAML's), before it changes the parameters."""
    import torch

    real = torch.optim.Adam.step
    hit = _nth(call)

    def step(self, *args, **kwargs):
        if hit():
            _die()
        return real(self, *args, **kwargs)

    torch.optim.Adam.step = step


def kill_at_log_row(call: int) -> None:
    """SIGKILL while writing the `call`-th row of metrics.csv."""
    from metarun.report import results

    real = results.MetricsLog.write
    hit = _nth(call)

    def write(self, row):
        if hit():
            _die()
        return real(self, row)

    results.MetricsLog.write = write


def _target(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def _patch_fdopen(name: str, call: int, make) -> None:
    """Wrap the `call`-th file opened for writing `name`: its temporary file (metarun.files.atomic_writer), or
    the file itself should a writer write in place."""
    real = os.fdopen
    hit = _nth(call)

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        target = _target(fd) if isinstance(fd, int) else ""
        if (target == name or target.startswith(f".{name}.")) and hit():
            return make(f)
        return f

    os.fdopen = fdopen


class _Proxy:
    def __init__(self, f) -> None:
        self._f = f

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._f, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def kill_mid_write(name: str, call: int) -> None:
    """SIGKILL after half of the bytes of the `call`-th write of `name` reached its temporary file."""

    class Half(_Proxy):
        def write(self, data):
            data = bytes(data) if not isinstance(data, str) else data
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            os.fsync(self._f.fileno())
            _die()

    _patch_fdopen(name, call, Half)


def disk_full(name: str, call: int) -> None:
    """The `call`-th file written for `name` fills the disk: 4 KiB go through, then ENOSPC."""

    class Full(_Proxy):
        room = 4096

        def write(self, data):
            if len(data) <= self.room:
                self.room -= len(data)
                return self._f.write(data)
            self._f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _patch_fdopen(name, call, Full)


def kill_at_replace(name: str, call: int, after: bool) -> None:
    """SIGKILL just before (or just after) the `call`-th rename of a finished temporary file onto `name`."""
    real = os.replace
    hit = _nth(call)

    def replace(src, dst, *args, **kwargs):
        mine = os.path.basename(str(dst)) == name and hit()
        if mine and not after:
            _die()
        out = real(src, dst, *args, **kwargs)
        if mine:
            _die()
        return out

    os.replace = replace


def poison_sample(split: str, call: int, value: float) -> None:
    """From the `call`-th `split` batch on, the targets are `value` (nan or inf): the loss stops being finite."""
    from metarun.data.sine import SineWaves

    real = SineWaves.sample
    seen = {"n": 0}

    def sample(self, split_, *args, **kwargs):
        episode = real(self, split_, *args, **kwargs)
        if split_ == split:
            seen["n"] += 1
            if seen["n"] >= call:
                sx, sy, qx, qy = episode
                episode = type(episode)(sx, sy.fill_(value), qx, qy.fill_(value))
        return episode

    SineWaves.sample = sample


def zero_agreement_vectors() -> None:
    """Every vector that agreement weighting compares is zero (as when no inner loop moves)."""
    import torch

    from metarun.weighting import agreement

    real = agreement.agreement
    agreement.agreement = lambda vectors, *rest: real({k: torch.zeros_like(v) for k, v in vectors.items()}, *rest)


def raise_in_job(seed: int) -> None:
    """The job with this seed raises, as a bug in one cell of a sweep would."""
    from metarun.run import train

    real = train.run

    def run(cfg, out_dir, *args, **kwargs):
        if cfg.seed == seed:
            raise RuntimeError(f"simulated bug in the job with seed={seed}")
        return real(cfg, out_dir, *args, **kwargs)

    train.run = run


def ctrl_c(call: int, again: str | None = None) -> None:
    """A real SIGINT (Ctrl-C) while the `call`-th training batch is drawn; `again`: a second one right after
    (`now`), or halfway through writing the next checkpoint (`checkpoint`)."""
    from metarun.data.sine import SineWaves

    real = SineWaves.sample
    hit = _nth(call)

    def press() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    def sample(self, split_, *args, **kwargs):
        if split_ == "train" and hit():
            press()
            if again == "now":
                press()
        return real(self, split_, *args, **kwargs)

    SineWaves.sample = sample
    if again == "checkpoint":
        class Pressed(_Proxy):
            def write(self, data):
                data = bytes(data) if not isinstance(data, str) else data
                self._f.write(data[: len(data) // 2])
                press()  # the handler raises here, halfway through the temporary file
                return self._f.write(data[len(data) // 2:])

        _patch_fdopen_after(call, "checkpoint.pt", Pressed)


def _patch_fdopen_after(iteration: int, name: str, make) -> None:
    """Wrap the first file opened for writing `name` once the `iteration`-th training batch has been drawn."""
    from metarun.data.sine import SineWaves

    drawn = [0]
    sample = SineWaves.sample

    def counting(self, split_, *args, **kwargs):
        drawn[0] += split_ == "train"
        return sample(self, split_, *args, **kwargs)

    SineWaves.sample = counting
    real = os.fdopen
    done = [False]

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        target = _target(fd) if isinstance(fd, int) else ""
        if drawn[0] >= iteration and not done[0] and target.startswith(f".{name}."):
            done[0] = True
            return make(f)
        return f

    os.fdopen = fdopen



def gpus(count: int) -> None:
    """The machine shows `count` CUDA GPUs (none can be used: only the checks that count them run)."""
    import torch

    torch.cuda.is_available = lambda: count > 0
    torch.cuda.device_count = lambda: count


PATCHES = {f.__name__: f for f in (kill_at_sample, kill_at_step, kill_at_log_row, kill_mid_write, disk_full,
                                    kill_at_replace, poison_sample, zero_agreement_vectors, raise_in_job, ctrl_c,
                                    gpus)}


# ---- the driver ---------------------------------------------------------------------------------------------

TIMEOUT_S = 300


def _child(job: dict) -> int:
    signal.alarm(TIMEOUT_S)  # a hung run ends (SIGALRM, returncode -14) instead of hanging the test session
    for fd, suffix in ((1, "out"), (2, "err")):
        os.dup2(os.open(f"{job['log']}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    if job["patch"]:
        name, kwargs = job["patch"]
        PATCHES[name](**kwargs)
    try:
        if job["entry"] == "table":
            from metarun.commands.table import main as table_main

            return table_main(job["argv"])
        if job["entry"] == "eval":
            from metarun.commands.eval import main as eval_main

            sys.argv = ["metarun-eval", *job["argv"]]
            sys.exit(eval_main())
        from metarun.commands.cli import main

        sys.argv = ["metarun", *job["argv"]]
        sys.exit(main())  # as the console script does
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1


def serve() -> None:
    # Imported once here, so that each child starts with them loaded; no torch op runs in this process.
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (the first optimiser imports it: 2.5 s)

    import metarun.commands.cli  # noqa: F401
    import metarun.data.miniimagenet  # noqa: F401
    import metarun.data.omniglot  # noqa: F401
    import metarun.report.results  # noqa: F401
    import metarun.run.train  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(job)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
