"""Atomic files: write beside the target, fsync, then rename over it.

An interrupted or failed write (a crash, a full disk) leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tapweight.errors import TapweightError
from tapweight.loading import NUMPY_SCALARS, container, load_into, refusal


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

    Torch files are read with ``weights_only=True`` (no pickled code runs), numpy scalars
    allowed (ImageMol's fine-tuned checkpoints keep their metrics as such). An engine
    checkpoint (``checkpoint.pt``) gives its θ. A missing, unreadable or unsafe file is a
    one-line :class:`TapweightError` that says what the file is and what to pass instead.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise TapweightError(f"--init '{path}' does not exist")
    if file.suffix == ".safetensors":
        return load_file(str(file))
    try:
        with torch.serialization.safe_globals(NUMPY_SCALARS):
            state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, struct.error) as err:
        raise TapweightError(refusal(path, file, str(err))) from None
    if not isinstance(state, dict):
        raise TapweightError(f"--init '{path}' holds a {type(state).__name__}, not a state dict")
    return state["theta"] if isinstance(state.get("theta"), dict) else state


def load_backbone(module: torch.nn.Module, path: str, strict: bool = True, option: str = "") -> None:
    """Load ``--init`` weights saved by tapweight (``backbone.safetensors``, a
    ``checkpoint.pt``, a θ or w state dict: the ``backbone.`` prefix is stripped) or a plain
    state dict of the backbone. Missing or misshapen tensors are a one-line error unless
    ``strict`` is off (``option``: the config key that turns it off, named in the error); the
    run log records what was loaded (:func:`tapweight.loading.load_into`)."""
    state = read_weights(path)
    fmt = f"{container(Path(path).expanduser())}, plain state dict"
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        fmt = f"{container(Path(path).expanduser())}, tapweight backbone"
    load_into(module, state, target="backbone", source=f"--init '{path}'", format=fmt,
              strict=strict, option=option, fix="a checkpoint of this backbone")
