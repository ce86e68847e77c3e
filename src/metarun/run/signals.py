"""Stop requests: Ctrl-C (SIGINT), SIGTERM and SIGUSR1 (how Slurm preempts) are noted, not obeyed at once,
so the loop can finish its iteration and checkpoint. Then SIGTERM and SIGUSR1 are delivered again to
whatever handled them before (submitit's requeue, or the default: terminate), and Ctrl-C ends the run
with exit code 130. A second Ctrl-C does not wait: it raises KeyboardInterrupt where the run is; every
file is written to a temporary file and renamed, so what is on disk stays whole."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Interrupted(RuntimeError):
    """The run stopped at a signal after writing its checkpoint."""

    def __init__(self, signum: int, iteration: int) -> None:
        super().__init__(f"stopped by {describe(signum)} after iteration {iteration}; its checkpoint is saved")
        self.signum, self.iteration = signum, iteration


def describe(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


@contextmanager
def stop_requests() -> Iterator[list[int]]:
    """A list that receives the signals asked while inside (handlers only work in the main thread)."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def note(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and signal.SIGINT in caught:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        caught.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in SIGNALS}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def redeliver(signum: int) -> None:
    """Send the signal again, now that the previous handler is back in place."""
    os.kill(os.getpid(), signum)
