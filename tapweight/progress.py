"""A rich progress bar with ETA and a status line (the current λ); silent with ``quiet``."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, total: int, description: str, quiet: bool = False, start: int = 0):
        self.quiet = quiet
        self._bar = None if quiet else RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=Console(stderr=True), transient=False)
        self._task = None
        self._args = (description, total, start)

    def __enter__(self):
        if self._bar is not None:
            description, total, start = self._args
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=start, status="")
        return self

    def advance(self, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=status)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
