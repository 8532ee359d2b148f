"""One owner per run folder, and nothing left behind by a run that never got going.

A run folder is owned by the process that holds ``.lock`` in it: an exclusive ``flock``
taken without waiting, with the owner's pid, host and start time written inside. A second
``tapweight run`` or ``resume`` into the folder is refused with one line naming the owner.
The kernel drops the lock when its process ends, however it ends (a crash, SIGKILL, a lost
node's lease on a network file system), so a lock file left behind by a dead owner is
stale: it is reported and taken over. A clean exit removes the lock file.

A fresh run that fails (or is interrupted) before its first global step removes what it
made — the folder, and the parent folders it created — so a retry with the same ``--out``
finds nothing in its way. From the first step on the folder is kept for ``resume``.

`saved_task` says which domain and task a run folder holds (``resume``, ``show``,
``predict`` and ``export`` start from it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from omegaconf import OmegaConf

from tapweight.errors import TapweightError

log = logging.getLogger(__name__)

LOCK = ".lock"


def _has_content(folder: Path) -> bool:
    return any(p.name != LOCK for p in folder.iterdir())


def check_out(folder: Path, resume: bool) -> None:
    """Refuse, before any work, a folder a run cannot be written into."""
    if folder.exists() and not folder.is_dir():
        raise TapweightError(f"--out '{folder}' is a file, not a folder: pick another --out")
    if not resume and folder.is_dir() and _has_content(folder):
        raise TapweightError(f"run folder '{folder}' already exists: continue it with `tapweight "
                             f"resume {folder}` or pick another --out")
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TapweightError(f"cannot make run folder '{folder}': '{ancestor}' is a file; "
                             "pick another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise TapweightError(f"cannot make run folder '{folder}': no write permission in "
                             f"'{ancestor}'; pick another --out")


class RunFolder:
    """``with RunFolder(path, resume):`` creates (if needed) and locks the folder."""

    def __init__(self, path: Path, resume: bool):
        self.path, self.resume = Path(path), resume
        self.progressed = resume  # a resumed folder is never removed
        self._made: list[Path] = []  # folders this run created, outermost first
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        check_out(self.path, self.resume)
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TapweightError(f"cannot make run folder '{self.path}': {err.strerror}; "
                                 "pick another --out") from None
        self._made = list(reversed(missing))
        try:
            self._lock()
            if not self.resume and _has_content(self.path):  # another run got here first
                raise TapweightError(f"run folder '{self.path}' already exists: continue it with "
                                     f"`tapweight resume {self.path}` or pick another --out")
        except BaseException:
            self._release()
            self._remove_made()
            raise
        if self.resume:
            self._remove_temporary_files()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and not self.progressed:
                self._remove_contents()
        finally:
            self._release()
            if exc_type is not None and not self.progressed:
                self._remove_made()

    # -- the lock ------------------------------------------------------------------------
    def _lock(self) -> None:
        path = self.path / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise TapweightError(f"run folder '{self.path}' is in use by {owner}: wait for it "
                                     "to end or pick another --out") from None
            try:  # the owner before us may have removed the file between our open and lock
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        stale = os.read(fd, 200).decode(errors="replace").strip()
        if stale:
            log.warning("run folder %s: its last owner (%s) ended without releasing it (crash or "
                        "kill); taking it over", self.path, stale)
        owner = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        os.fsync(fd)

    def _release(self) -> None:
        if self._fd is None:
            return
        (self.path / LOCK).unlink(missing_ok=True)  # while still locked: no one holds a stale name
        os.close(self._fd)
        self._fd = None

    # -- clean-up ------------------------------------------------------------------------
    def _remove_contents(self) -> None:
        """Everything in the folder: a fresh run found it empty, so all of it is ours."""
        for entry in self.path.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _remove_made(self) -> None:
        for folder in reversed(self._made):  # innermost first; stop at one that is not empty
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []

    def _remove_temporary_files(self) -> None:
        """Half-written files of an atomic write that a killed process left behind."""
        for tmp in self.path.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def saved_task(folder: Path) -> tuple[str, str]:
    """The domain and task a run folder's ``config.yaml`` names (one-line errors if it cannot);
    the task is ``""`` in a ``tapweight pretrain`` folder."""
    saved = Path(folder) / "config.yaml"
    if not saved.is_file():
        raise TapweightError(f"'{folder}' is not a run folder (no config.yaml)")
    fix = "restore it from the run's log.txt, or start a new run"
    try:
        head = OmegaConf.to_container(OmegaConf.load(saved))
    except Exception as err:  # any YAML problem of a damaged file
        reason = " ".join(str(err).split())[:120]
        raise TapweightError(f"{saved} is not valid YAML ({reason}): {fix}") from None
    if not isinstance(head, dict) or not (isinstance(head.get("domain"), str) and head["domain"]
                                          and isinstance(head.get("task"), str)):
        raise TapweightError(f"{saved} does not name a domain and task (empty or damaged): {fix}")
    return head["domain"], head["task"]
