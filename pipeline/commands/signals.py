"""SIGINT and SIGTERM as a stop flag: the loop stops after its current step, flushes and exits cleanly. Every
command that runs until stopped takes its flag from here (the Spark job installs its own around the query)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable


def stop_event(*extra: signal.Signals) -> threading.Event:
    """An event set by SIGINT, SIGTERM (and ``extra``); ``wait`` is a sleep that a signal cuts short (a ban's wait
    can be hours)."""
    stopping = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        print(f"pipeline: {signal.Signals(signum).name} received, flushing and stopping", file=sys.stderr)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM, *extra):
        signal.signal(signum, handler)
    return stopping


def interruptible(stopping: threading.Event) -> Callable[[float], None]:
    """A ``sleep`` for the client and the poller that ends as soon as ``stopping`` is set (by a signal)."""

    def sleep(seconds: float) -> None:
        stopping.wait(seconds)

    return sleep


def interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP (``timeout``, a closed terminal) end a command as Ctrl-C does: through its clean-up."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
