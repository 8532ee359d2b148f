"""The run's log: ``log.txt`` in the run folder, and the INFO lines on the console.

Until `RunLog.start` (training begins) every record is held in memory: the console
shows warnings at once but INFO lines only from then on, and ``log.txt`` is written then,
with everything held. A run that fails on its data, options or model before it prints its
one error line and nothing else, and writes no ``log.txt`` (a resumed folder's is left as
it was). Our INFO lines reach the log however tapweight is called (CLI or library).

Within a run each distinct line is shown and written once (`Once`): the second seed
rebuilds the same data and backbone and would repeat the first seed's warnings.

Other libraries reach the CLI's console through its handler alone, at WARNING: one that
prints through a stderr handler of its own (datasets, transformers) is adopted
(`adopt_library_handlers`), and its ERROR records are held back (`LibraryErrors`)
until training starts or the command ends without an error line of ours. datasets logs
"Failed to read file ..." before it raises; our one error line then says it instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import MemoryHandler
from pathlib import Path


class OursOrWarnings(logging.Filter):
    """tapweight's (and its plugins') INFO lines, everyone's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return ours(record) or record.levelno >= logging.WARNING


def ours(record: logging.LogRecord) -> bool:
    return record.name.startswith("tapweight")


class LibraryErrors(logging.Filter):
    """On a console handler: other libraries' ERROR (and CRITICAL) records are held, not shown,
    while `holding`; `release` shows them (late, but once) and stops holding,
    `drop` forgets them (our error line names the failure they reported)."""

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.handler, self.held, self.holding = handler, [], True

    def filter(self, record: logging.LogRecord) -> bool:
        if self.holding and record.levelno >= logging.ERROR and not ours(record):
            self.held.append(record)
            return False
        return True

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for record in held:
            self.handler.handle(record)

    def drop(self) -> None:
        self.held = []


def console_handlers() -> list[logging.Handler]:
    """The CLI's console handlers on the root logger (none under the Python API)."""
    return [h for h in logging.getLogger().handlers if getattr(h, "tapweight", False)]


def library_errors() -> list[LibraryErrors]:
    return [f for h in console_handlers() for f in h.filters if isinstance(f, LibraryErrors)]


class _NotFrom(logging.Filter):
    """Drops the records of a library's loggers (below ERROR): they go to log.txt only."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not (record.name == self.prefix
                                                       or record.name.startswith(self.prefix + "."))


@contextmanager
def log_file_only(library: str) -> Iterator[None]:
    """While the block runs, the warnings of ``library``'s loggers (e.g. ``transformers``
    reporting on a model it loads) reach ``log.txt`` but not the console: what they say,
    tapweight says in its own line. Errors still show."""
    handlers, drop = console_handlers(), _NotFrom(library)
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


def adopt_library_handlers() -> None:
    """Under the CLI, libraries that print through a stderr handler of their own (the Hugging
    Face ones add one when imported) print through ours: the handler goes, the logger
    propagates. A record then reaches the console once, filtered like everyone's, and log.txt.
    Called when a run starts and by a plugin right after it imports such a library; under
    the Python API it does nothing (the caller owns the handlers)."""
    if not console_handlers():
        return
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("tapweight") or not isinstance(logger, logging.Logger):
            continue
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
            logger.propagate = True


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
        self.console = console_handlers()
        self.console_levels = [h.level for h in self.console]
        self.once = [Once() for _ in self.console]  # one per handler: each shows a line once

    def __enter__(self) -> RunLog:
        adopt_library_handlers()
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
        for errors in library_errors():  # training began: no data error of ours can follow
            errors.release()
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
