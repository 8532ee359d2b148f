"""Loading pretrained tensors into a module: strict by default, and recorded in the run log.

A pretrained starting point (ImageMol's ResNet18, roberta-base) decides what the paper's
method starts from, so a checkpoint that lacks some of the module's tensors is an error that
names them, unless the user asks for a partial load (``--set <domain>.strict_load=false``);
tensors of the checkpoint the module does not take are listed once. Either way ``log.txt``
says which file, in which format, and how many tensors went where (`LoadReport`).
"""

from __future__ import annotations

import logging
import pickletools
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tapweight.errors import TapweightError

log = logging.getLogger(__name__)

#: terminal control sequences (colours, bold) that foreign error messages sometimes carry
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """A foreign library's message fit for one line of ours: no terminal codes, no newlines."""
    return " ".join(ANSI.sub("", text).split())


_scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
#: globals a weights-only ``torch.load`` may rebuild besides tensors: numpy number scalars,
#: which ImageMol's fine-tuned checkpoints hold as metrics (a scalar is its dtype and its
#: bytes). numpy 1.x pickled them from ``numpy.core``, numpy 2 from ``numpy._core``: both
#: spellings are allowed.
NUMPY_SCALARS = [
    np.dtype, *((_scalar, f"numpy.{core}.multiarray.scalar") for core in ("core", "_core")),
    *(getattr(np.dtypes, f"{kind}DType") for kind in ("Float64", "Float32", "Int64", "Int32", "Bool")),
]
#: the keys of the file ImageMol's ``finetune.py`` writes (``save_finetune_ckpt``)
IMAGEMOL_FINETUNED = {"model_state_dict", "optimizer_state_dict", "result_dict"}


def container(file: Path) -> str:
    """The kind of weights file: safetensors, or torch's zip or pre-zip (before torch 1.6) format."""
    if file.suffix == ".safetensors":
        return "safetensors"
    return "torch zip file" if zipfile.is_zipfile(file) else "pre-zip torch file"


def pickled_strings(file: Path) -> set[str]:
    """The strings in a torch file's object pickle (dict keys, class names), read with
    ``pickletools`` so that nothing is unpickled: enough to say what a refused file is."""
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                ops = list(pickletools.genops(archive.read(name)))
        else:  # pre-zip: a magic number, a protocol version and system info, then the object
            with open(file, "rb") as fh:
                for _ in range(3):
                    list(pickletools.genops(fh))
                ops = list(pickletools.genops(fh))
    except (ValueError, OSError, StopIteration, zipfile.BadZipFile):
        return set()
    return {arg for _, arg, _ in ops if isinstance(arg, str)}


def refusal(what: str, file: Path, error: str, fix: str) -> str:
    """The one-line message for a torch file ``torch.load(weights_only=True)`` refused with
    ``error``: what the file is (``what`` names it), and what to do instead (``fix``)."""
    unsafe = re.search(r"GLOBAL (\S+) was not an allowed|got <class '([^']+)'>", error)
    if unsafe is None:
        reason = error.split("WeightsUnpickler error:", 1)[-1].strip().splitlines() or [error]
        return (f"{what} is not a readable torch file (truncated or another format: "
                f"{plain(reason[0])[:120]}): {fix}")
    refused = unsafe.group(1) or unsafe.group(2)
    if IMAGEMOL_FINETUNED.issubset(pickled_strings(file)):
        return (f"{what} is an ImageMol fine-tuned checkpoint (finetune.py) whose metrics "
                f"({refused}) cannot be read without running pickled code: pass ImageMol's "
                "pretrained checkpoint, or, if you trust this file, its weights alone: python -c "
                f"\"import torch; torch.save(torch.load('{file}', weights_only=False)"
                "['model_state_dict'], 'weights.pth')\" and --init weights.pth")
    return (f"{what} holds Python objects besides tensors ({refused}); tapweight does not unpickle "
            f"them (that could run code): {fix}")


def names(keys: Sequence[str], shown: int = 8) -> str:
    """``a, b, c, ... (N in all)``: the first ``shown`` names of a list, for one-line messages."""
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


@dataclass
class LoadReport:
    """What loading ``source`` into ``target`` did: the run log's record and the strict check."""

    target: str  # what received the tensors, e.g. "backbone mol.resnet18"
    source: str  # the file, folder or hub name
    format: str  # e.g. "ImageMol release, pre-zip torch file"
    loaded: int  # the target's tensors taken from the checkpoint
    missing: Sequence[str] = ()  # the target's tensors the checkpoint lacks
    mismatched: Sequence[str] = ()  # ... that it holds in another shape ("name a → b")
    unexpected: Sequence[str] = ()  # the checkpoint's tensors the target does not take
    dropped: str = ""  # why the unexpected ones are not needed, for the log

    def settle(self, strict: bool, option: str = "", fix: str = "") -> None:
        """Raise if tensors are missing or misshapen and loading is strict; log the load.

        ``option`` is the config key that turns strictness off; ``fix`` what else to pass.
        """
        absent = [*self.missing, *self.mismatched]
        if absent and strict:
            parts = [f"{label} {names(keys)}" for label, keys in
                     (("missing", self.missing), ("of another shape", self.mismatched)) if keys]
            advice = [fix] if fix else []
            if option:
                advice.append(f"--set {option}=false to start them from scratch")
            raise TapweightError(f"{self.source} ({self.format}) does not fit {self.target}: "
                                 f"{len(absent)} tensors {'; '.join(parts)}; pass "
                                 f"{' or '.join(advice) or 'a checkpoint of this model'}")
        log.info("%s loaded from %s (%s): %d tensors, %d missing, %d of another shape, "
                 "%d not used", self.target, self.source, self.format, self.loaded,
                 len(self.missing), len(self.mismatched), len(self.unexpected))
        if self.unexpected:
            log.info("%s: not used from %s: %s%s", self.target, self.source,
                     ", ".join(self.unexpected), f" ({self.dropped})" if self.dropped else "")
        if absent:
            log.warning("%s starts %d tensors from scratch (%s=false): %s", self.target,
                        len(absent), option or "strict", ", ".join(absent))


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], *, target: str, source: str,
              format: str, strict: bool = True, option: str = "", fix: str = "",
              dropped: str = "") -> LoadReport:
    """Copy the tensors of ``state`` that fit ``module``; strictness and logging as
    `LoadReport.settle`. The module's other tensors keep their initial values."""
    expected = module.state_dict()
    fits = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    report = LoadReport(
        target, source, format, loaded=len(fits),
        missing=[k for k in expected if k not in state],
        mismatched=[f"{k} {tuple(state[k].shape)} → {tuple(v.shape)}" for k, v in expected.items()
                    if k in state and k not in fits],
        unexpected=[k for k in state if k not in expected], dropped=dropped)
    report.settle(strict, option, fix)
    module.load_state_dict(fits, strict=False)
    return report
