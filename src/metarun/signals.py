"""Stop requests: SIGTERM and SIGUSR1 (how Slurm preempts) are noted, not obeyed at once, so the
loop can finish its iteration and checkpoint; then the signal is delivered again to whatever
handled it before (submitit's requeue, or the default: terminate)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Interrupted(RuntimeError):
    """The run stopped at a signal after writing its checkpoint."""

    def __init__(self, signum: int, iteration: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}; the checkpoint "
                         "is saved: run the same command in the same folder to continue")
        self.signum = signum


@contextmanager
def stop_requests() -> Iterator[list[int]]:
    """A list that receives the signals asked while inside (handlers only work in the main thread)."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in SIGNALS}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def redeliver(signum: int) -> None:
    """Send the signal again, now that the previous handler is back in place."""
    os.kill(os.getpid(), signum)
