"""Checkpoints and weight files: written atomically, read without running code.

Writes go through `tapweight.files.atomic_write`: an interrupted or failed write (a
crash, a signal, a full disk) leaves the previous file intact.

Reads never unpickle arbitrary objects: ``torch.load(weights_only=True)`` admits tensors
and plain containers only, so a crafted ``checkpoint.pt`` in a shared run folder cannot run
code when it is resumed. The engine's state is made of exactly those (tensors, numbers,
strings, lists and dicts). A file that is empty, truncated, not a torch file, or holds
other objects is a one-line `TapweightError`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tapweight.errors import TapweightError
from tapweight.files import atomic_write
from tapweight.job.loading import NUMPY_SCALARS, container, load_into, refusal

#: keys every engine checkpoint has (the engine checks the rest when it loads the state)
CHECKPOINT_KEYS = ("step", "theta")


def save_state(state: dict, path: Path) -> None:
    """The engine's full state (models, optimizers, schedulers, streams, λ history).

    Saved through a file object: torch names the archive's entries after a path it is given
    (here a random temporary name), and after nothing for a file object, so the same state
    is the same bytes (docs/reproducibility.md)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            torch.save(state, out)

    atomic_write(path, write)


def torch_file(path: Path, what: str, fix: str) -> dict:
    """The dict a torch file holds, loaded with ``weights_only=True`` (numpy scalars allowed:
    ImageMol's fine-tuned checkpoints keep their metrics as such); ``what`` names the file in
    the one-line error (e.g. ``"--init 'x.pt'"``) and ``fix`` says what to do about it."""
    if path.is_dir():
        raise TapweightError(f"{what} is a folder, not a file: {fix}")
    if path.stat().st_size == 0:
        raise TapweightError(f"{what} is empty (0 bytes): {fix}")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(NUMPY_SCALARS):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (MemoryError, RecursionError):
        raise
    except Exception as err:  # any parse failure of an untrusted file means "not readable"
        raise TapweightError(refusal(what, path, str(err) or type(err).__name__, fix)) from None
    if not isinstance(state, dict):
        raise TapweightError(f"{what} holds a {type(state).__name__}, not a state dict: {fix}")
    return state


def load_state(path: Path) -> dict:
    """An engine checkpoint written by `save_state`, or a one-line error saying how to
    go on without it."""
    fix = f"delete {path} to restart this seed from step 0"
    state = torch_file(Path(path), f"checkpoint {path}", fix)
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise TapweightError(f"checkpoint {path} is not a tapweight checkpoint (no "
                             f"{', '.join(missing)}): {fix}")
    return state


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """A module's tensors as safetensors (shared tensors cloned apart, as the format needs)."""
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


#: while `reading_once` is active: the last weights file read, by (path, size, mtime)
_kept: dict | None = None


@contextlib.contextmanager
def reading_once():
    """Within this block `read_weights` reads each file once: a run checks ``--init``
    before any work, then every seed's backbone and objective heads take their tensors from
    the same read (one copy of the file's tensors is held until the block ends)."""
    global _kept
    _kept = {}
    try:
        yield
    finally:
        _kept = None


def read_weights(path: str) -> dict:
    """The tensors of a weights file given to ``--init``: safetensors or a torch file.

    Torch files are read with ``weights_only=True`` (no pickled code runs), numpy scalars
    allowed (ImageMol's fine-tuned checkpoints keep their metrics as such). An engine
    checkpoint (``checkpoint.pt``) gives its θ. A missing, unreadable or unsafe file is a
    one-line `TapweightError` that says what the file is and what to pass instead.
    Inside `reading_once` a file read before (same size and modification time) is not
    read again; the caller gets its own dict of the same tensors.
    """
    file = Path(path).expanduser()
    what, fix = f"--init '{path}'", "pass a .safetensors or .pt file of weights"
    if not file.exists():
        raise TapweightError(f"{what} does not exist")
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if _kept is not None and key in _kept:
        return dict(_kept[key])
    if file.suffix != ".safetensors":
        state = torch_file(file, what, fix)
        state = state["theta"] if isinstance(state.get("theta"), dict) else state
    else:
        try:
            state = load_file(str(file))
        except (SafetensorError, OSError) as err:
            raise TapweightError(f"{what} is not a readable safetensors file ({err}): {fix}") from None
    if _kept is not None:
        _kept.clear()  # the last file only: a run has one --init
        _kept[key] = state
    return dict(state)


def load_backbone(module: torch.nn.Module, path: str, strict: bool = True, option: str = "") -> None:
    """Load ``--init`` weights saved by tapweight (``backbone.safetensors``, a
    ``checkpoint.pt``, a θ or w state dict: the ``backbone.`` prefix is stripped) or a plain
    state dict of the backbone. Missing or misshapen tensors are a one-line error unless
    ``strict`` is off (``option``: the config key that turns it off, named in the error); the
    run log records what was loaded (`tapweight.job.loading.load_into`)."""
    state = read_weights(path)
    fmt = f"{container(Path(path).expanduser())}, plain state dict"
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        fmt = f"{container(Path(path).expanduser())}, tapweight backbone"
    load_into(module, state, target="backbone", source=f"--init '{path}'", format=fmt,
              strict=strict, option=option, fix="a checkpoint of this backbone")
