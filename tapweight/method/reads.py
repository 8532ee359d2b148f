"""The engine's one host read per global step, and the finite checks made on it.

A GPU runs ahead of Python until a value is read on the host; each read waits for the
device's queue. So the engine reads nothing while a step runs: the levels queue what the
host needs (the objectives' losses, the fine-tuning and validation losses, fp16's
skipped-step flag, the hypergradient) with `HostReads.defer`, and `HostReads.read` brings
them over in one transfer at the end of the step. Only then are they checked finite; a
non-finite value still stops the run at the step it happened, naming it and what to lower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tapweight.errors import TapweightError


class NonFiniteLoss(TapweightError):
    """A loss became NaN or infinite at global step ``step``. The message names the value
    and the learning rate to lower; the runner adds whether a checkpoint was kept."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class HostReads:
    """Device values queued for the step's one read; ``host`` maps each key to what the last
    read returned (a list of floats)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: list[tuple] = []
        self.host: dict[str, list[float]] = {}

    def defer(self, key: str, values: torch.Tensor, what: Sequence[str] = (), advice: str = "",
              unless: str = "") -> None:
        """Queue ``values`` for the read under ``key`` (a later queue of the same key replaces
        it). With ``advice`` the read checks them finite (``what`` names each) and raises
        NonFiniteLoss otherwise, except where the key ``unless`` was read nonzero before them."""
        self.pending.append((key, values.detach().double().reshape(-1), what, advice, unless))

    def read(self, step: int) -> dict[str, list[float]]:
        """The one host synchronisation of global step ``step`` (counted from 1): every queued
        value in one transfer, then the finite checks in the order they were queued (level I's
        losses first). Returns ``host``, which holds this read's values only."""
        pending, self.pending, self.host = self.pending, [], {}
        if not pending:
            return self.host
        flat = torch.cat([v.to(self.device) for _, v, _, _, _ in pending]).tolist()  # the sync
        start = 0
        for key, values, what, advice, unless in pending:
            self.host[key] = read = flat[start:start + len(values)]
            start += len(values)
            bad = [f"{name} = {v}" for name, v in zip(what, read) if advice and not math.isfinite(v)]
            if bad and not (unless and self.host.get(unless, [0.0])[0]):
                raise NonFiniteLoss(f"non-finite loss at step {step} ({'; '.join(bad)}): {advice}", step)
        return self.host
