"""Atomic files: write beside the target, fsync, then rename over it.

An interrupted or failed write (a crash, a full disk) leaves the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from tapweight.errors import TapweightError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move ``tmp`` onto ``path``; on any error ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
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


def save_state(state: dict, path: Path) -> None:
    """The engine's full state (models, optimizers, schedulers, streams, λ history)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """A module's tensors as safetensors (shared tensors cloned apart, as the format needs)."""
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
