"""Atomic files: write beside the target, fsync, then rename over it.

An interrupted or failed write (a crash, a full disk) leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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


def read_weights(path: str) -> dict:
    """The tensors of a weights file given to ``--init``: safetensors or a torch file.

    An engine checkpoint (``checkpoint.pt``) gives its θ. A missing or unreadable file is a
    one-line :class:`TapweightError`.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise TapweightError(f"--init '{path}' does not exist")
    if file.suffix == ".safetensors":
        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise TapweightError(f"--init '{path}' is not a readable torch file "
                             f"({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise TapweightError(f"--init '{path}' holds a {type(state).__name__}, not a state dict")
    return state["theta"] if isinstance(state.get("theta"), dict) else state


def load_backbone(module: torch.nn.Module, path: str) -> None:
    """Load ``--init`` weights saved by tapweight (``backbone.safetensors``, a
    ``checkpoint.pt``, a θ or w state dict: the ``backbone.`` prefix is stripped) or a plain
    state dict of the backbone; a mismatch is a one-line error."""
    state = read_weights(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise TapweightError(f"--init '{path}' does not fit this backbone: "
                             f"{' '.join(str(err).split())[:300]}") from None
