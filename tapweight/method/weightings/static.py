"""Weights that never move: ``none``, ``uniform``, ``fixed``, ``single:<objective>``.

Only level I runs for them (``learns`` is False): levels II and III exist to move λ.
"""

from __future__ import annotations

from collections.abc import Sequence

from tapweight.errors import TapweightError
from tapweight.method.weightings.base import Weighting


class NoPretraining(Weighting):
    """``none``: no continued pretraining; the final fine-tune starts from the initial backbone."""

    pretrains = False


class Uniform(Weighting):
    """``uniform``: λ_k = 1/K throughout."""


class Fixed(Weighting):
    """``fixed``: λ = ``weights`` / Σ weights throughout (``--set weights=[0.5,0.3,0.2]``)."""

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        if not cfg.weights:
            raise TapweightError("method 'fixed' needs weights: --set weights=[0.5,0.3,0.2]")
        self.start = list(cfg.weights)

    def initial(self, names: Sequence[str]) -> Sequence[float]:
        if len(self.start) != len(names):
            raise TapweightError(f"method 'fixed' needs one weight per objective ({len(names)}: "
                                 f"{', '.join(names)}), got {len(self.start)}")
        return self.start


class Single(Weighting):
    """``single:<objective>``: that objective alone, λ = 1."""

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        if not argument:
            raise TapweightError("method 'single' names its objective: --method single:<objective>")
        self.start = [1.0]

    def objectives(self, wanted: list[str]) -> list[str]:
        return [self.argument]
