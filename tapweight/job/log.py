"""The run's log: ``log.txt`` in the run folder, and the INFO lines on the console.

Until :meth:`RunLog.start` (training begins) every record is held in memory: the console
shows warnings at once but INFO lines only from then on, and ``log.txt`` is written then,
with everything held. A run that fails on its data, options or model before it prints its
one error line and nothing else, and writes no ``log.txt`` (a resumed folder's is left as
it was). Our INFO lines reach the log however tapweight is called (CLI or library).

Within a run each distinct line is shown and written once (:class:`Once`): the second seed
rebuilds the same data and backbone and would repeat the first seed's warnings.
"""

from __future__ import annotations

import logging
from logging.handlers import MemoryHandler
from pathlib import Path


class OursOrWarnings(logging.Filter):
    """tapweight's (and its plugins') INFO lines, everyone's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("tapweight") or record.levelno >= logging.WARNING


class Once(logging.Filter):
    """Each distinct record (logger, level, text) passes once; repeats are dropped."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class RunLog:
    def __init__(self):
        self.root, self.level = logging.getLogger(), logging.getLogger().level
        self.held = MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
        self.held.addFilter(OursOrWarnings())
        self.file: logging.Handler | None = None
        self.path: Path | None = None
        self.started = False
        # the CLI's console handlers: INFO held back until start()
        self.console = [h for h in self.root.handlers if getattr(h, "tapweight", False)]
        self.console_levels = [h.level for h in self.console]
        self.once = [Once() for _ in self.console]  # one per handler: each shows a line once

    def __enter__(self) -> RunLog:
        self.root.setLevel(min(self.level, logging.INFO))
        self.root.addHandler(self.held)
        for handler, once in zip(self.console, self.once):
            handler.setLevel(max(handler.level, logging.WARNING))
            handler.addFilter(once)
        return self

    def open(self, path: Path) -> None:
        """Write the log to ``path`` (appending) once the run starts."""
        self.path = path

    def start(self) -> None:
        """Training begins: show the held INFO lines, write the held records to log.txt."""
        if self.started:
            return
        self.started = True
        self._restore_console()
        for record in self.held.buffer:
            if record.levelno < logging.WARNING:  # warnings were shown when they came
                for handler in self.console:
                    if record.levelno >= handler.level:
                        handler.handle(record)
        if self.path is not None:
            self.file = logging.FileHandler(self.path)
            self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            self.file.addFilter(OursOrWarnings())
            self.file.addFilter(Once())
            self.held.setTarget(self.file)
            self.held.flush()
            self.root.addHandler(self.file)
        self.root.removeHandler(self.held)

    def _restore_console(self) -> None:
        for handler, level in zip(self.console, self.console_levels):
            handler.setLevel(level)

    def __exit__(self, *exc) -> None:
        self._restore_console()
        for handler, once in zip(self.console, self.once):
            handler.removeFilter(once)
        self.root.removeHandler(self.held)
        self.held.close()
        if self.file is not None:
            self.root.removeHandler(self.file)
            self.file.close()
        self.root.setLevel(self.level)
