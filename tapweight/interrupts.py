"""Ctrl-C (SIGINT) and a scheduler's SIGTERM, turned into a clean stop.

While `Signals` is active, the first SIGINT or SIGTERM is only recorded if it
arrives inside a `Signals.deferred` block (the global steps, a checkpoint write): the
block finishes, the runner sees `Signals.pending`, writes a checkpoint and raises
`Interrupted`. Outside such a block (loading data, the final fine-tune), or on a
second signal, `Interrupted` is raised at once and the work in flight is abandoned;
the last checkpoint on disk is intact because every file is written atomically.

The CLI prints the exception's one line and exits with 128 + the signal number (130 for
SIGINT, 143 for SIGTERM), as a shell reports a process killed by that signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run stopped on a signal. A ``BaseException`` (like ``KeyboardInterrupt``) so that
    no ``except Exception`` on the way up swallows it; ``str()`` is the line to print."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: the signal the current process received last (read by the plugin loader to tell a real
#: Ctrl-C from a plugin that raises KeyboardInterrupt while it is imported)
last_received: int | None = None


class Signals:
    """Install the handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self):
        self.received: int | None = None
        self._depth = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in HANDLED}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        global last_received
        last_received = signum
        first = self.received is None
        self.received = signum
        if not (first and self._depth):
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self):
        """A block a first signal does not break into: it is recorded for `pending`."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def pending(self) -> int | None:
        """The signal to stop on, agreed by every rank (so all stop after the same step)."""
        from tapweight import distributed  # torch: only a run gets here, not the command line

        return distributed.max_(self.received or 0) or None


def record_sigint() -> None:
    """Outside a run, Ctrl-C still raises ``KeyboardInterrupt``, but is remembered as real."""
    def handle(signum, frame):
        global last_received
        last_received = signum
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handle)
