"""A run's life around the engine: the folder it owns, the signals it answers, its checkpoints.

`tapweight.job.runner.run` enters one `Session` per run; the code below it reaches
it through `current`. The session

- owns the run folder (rank 0; `tapweight.job.folder`), removed again if the run fails
  before its first global step;
- answers SIGINT and SIGTERM (`tapweight.interrupts`): a global step or a checkpoint
  write in progress is finished, a checkpoint is written, and `Interrupted` carries
  the line ``interrupted at step N; continue with: tapweight resume DIR``;
- decides when a checkpoint is due: every ``checkpoint_every`` steps and whenever
  ``checkpoint_minutes`` have passed since the last one, so a crash loses little work;
- holds the run's INFO lines back from the console until the run is under way, so that
  an error in the data, the options or the model is the only line a user sees.
"""

from __future__ import annotations

import contextvars
import time
from pathlib import Path

from tapweight import distributed
from tapweight.config import RunConfig
from tapweight.interrupts import Interrupted, Signals
from tapweight.job.folder import RunFolder

_current: contextvars.ContextVar[Session] = contextvars.ContextVar("tapweight_session")


def current() -> Session:
    """The session of the run in progress."""
    return _current.get()


class Session:
    def __init__(self, out: Path, resume: bool, run_log=None):
        self.out, self.resume, self.run_log = Path(out), resume, run_log
        self.signals = Signals()
        self.folder: RunFolder | None = None
        self.seed, self.n_seeds, self.saved_step = 0, 1, 0
        self._last_save = time.monotonic()
        self._token = None

    def __enter__(self) -> Session:
        self.signals.__enter__()
        try:
            self.folder = distributed.on_main(RunFolder(self.out, self.resume).__enter__)
        except BaseException:
            self.signals.__exit__(None, None, None)
            raise
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _current.reset(self._token)
        try:
            if self.folder is not None:
                self.folder.__exit__(exc_type, exc, tb)
        finally:
            self.signals.__exit__(exc_type, exc, tb)

    # -- progress ------------------------------------------------------------------------
    def started(self) -> None:
        """Training begins: the held INFO lines go to the console."""
        if self.run_log is not None:
            self.run_log.start()

    def progressed(self) -> None:
        """A step or a seed is done: the folder now holds work worth resuming."""
        if self.folder is not None:
            self.folder.progressed = True

    def begin_seed(self, seed: int, n_seeds: int) -> None:
        self.seed, self.n_seeds, self.saved_step = seed, n_seeds, 0
        self._last_save = time.monotonic()

    def saved(self, step: int) -> None:
        """A checkpoint of the current seed at ``step`` is on disk."""
        self.saved_step, self._last_save = step, time.monotonic()

    def checkpoint_due(self, cfg: RunConfig, step: int) -> bool:
        every = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
        late = cfg.checkpoint_minutes and time.monotonic() - self._last_save >= 60 * cfg.checkpoint_minutes
        return bool(every or late)

    # -- signals -------------------------------------------------------------------------
    def deferred(self):
        """A block a first SIGINT/SIGTERM lets finish (see `Signals`)."""
        return self.signals.deferred()

    def stop_signal(self, agree: bool = True) -> int | None:
        """The signal received, if any; with ``agree`` every rank returns the same answer."""
        return self.signals.pending() if agree else self.signals.received

    def interrupted(self, signum: int) -> Interrupted:
        """The exception to end the run with, carrying the line the user reads."""
        if self.folder is not None and not self.folder.progressed:
            return Interrupted(signum, "interrupted before the first step; nothing was saved")
        of_seed = f" of seed {self.seed}" if self.n_seeds > 1 else ""
        return Interrupted(signum, f"interrupted at step {self.saved_step}{of_seed}; "
                                   f"continue with: tapweight resume {self.out}")
