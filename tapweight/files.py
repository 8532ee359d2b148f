"""Files written atomically: an interrupted or failed write leaves the previous file intact.

Every file a run folder holds (checkpoints, CSVs, plots, configs) goes through
`atomic_write`: written beside the target, fsynced, then renamed over it, so a crash,
a signal or a full disk never leaves half a file. New files get the permissions the umask
gives any other file of the run folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tapweight.errors import TapweightError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move ``tmp`` onto ``path``; on any error ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are read like the rest
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TapweightError(f"could not write {path}: {err.strerror or err}; "
                             "the previous file is kept. Free disk space or pick --out") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
