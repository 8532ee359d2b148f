"""A run's progress on the console: a rich bar with ETA and, under it, what the run is
learning (`StepStatus`: λ, the objectives' losses, the level II and validation
losses). Silent with ``quiet``; the runner then logs the same status as a line every
``log_every`` steps (``step 20/100 λ ... | loss ... | finetune ... val ...``).
"""

from __future__ import annotations

from collections import deque

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class StepStatus:
    """The run's state as one line: the current λ, and the losses averaged over the last
    ``window`` global steps (one step's batch is noisy; the average shows the trend)."""

    def __init__(self, window: int):
        self.records: deque[dict[str, float]] = deque(maxlen=window)

    def update(self, record: dict[str, float]) -> None:
        self.records.append(record)

    def _mean(self, key: str) -> float:
        return sum(r[key] for r in self.records) / len(self.records)

    def line(self) -> str:
        if not self.records:
            return ""
        last = self.records[-1]
        lam = " ".join(f"{k[7:]}={v:.3f}" for k, v in last.items() if k.startswith("lambda_"))
        parts = [f"λ {lam}"]
        losses = " ".join(f"{k[5:]}={self._mean(k):.4g}" for k in last if k.startswith("loss_"))
        if losses:
            parts.append(f"loss {losses}")
        levels = " ".join(f"{name} {self._mean(key):.4g}" for key, name in
                          (("finetune_loss", "finetune"), ("val_loss", "val")) if key in last)
        if levels:
            parts.append(levels)
        return " | ".join(parts)


class _BarAndStatus(RichProgress):
    """The bar, with the status on its own line(s) below it rather than squeezed into a column."""

    status = ""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.status:
            yield Text(self.status)


class Progress:
    def __init__(self, total: int, description: str, quiet: bool = False, start: int = 0):
        self.quiet = quiet
        self._bar = None if quiet else _BarAndStatus(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False)
        self._task = None
        self._args = (description, total, start)

    def __enter__(self):
        if self._bar is not None:
            description, total, start = self._args
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=start)
        return self

    def advance(self, status: str = "") -> None:
        if self._bar is not None:
            self._bar.status = status
            self._bar.update(self._task, advance=1)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
