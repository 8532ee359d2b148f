"""Weighting methods: how λ is decided, one registered rule per ``--method`` name.

Each rule is a `Weighting` registered through the
``register_methods`` hook (docs/hooks.md); the core's own (plugin ``core``, registered in
`tapweight.plugin.builtins`) live one family per module:

- static.py: ``none``, ``uniform``, ``fixed``, ``single:<objective>``;
- tapweight.py: ``tapweight``, ``tapweight-normalized``, ``olaux`` (the hypergradient);
- cosine.py: ``cosine`` (META-TARTAN / AANG), ``gating`` (Du et al.);
- doge.py: ``doge``; gradnorm.py: ``gradnorm`` (task-agnostic);
- gradients.py: the per-objective gradients the last four read.

`build` turns ``cfg.method`` (``NAME`` or ``NAME:ARGUMENT``) into a fresh weighting;
docs/weightings.md has the update rules, their papers and the comparisons.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tapweight.errors import TapweightError
from tapweight.method.weightings.base import AlphaOptimizer, Signal, Weighting

__all__ = ["AlphaOptimizer", "Signal", "Weighting", "build", "default_weighting"]


def build(registry: Any, cfg: Any) -> Weighting:
    """A fresh weighting for ``cfg.method`` from ``registry`` (every seed gets its own)."""
    name, _, argument = cfg.method.partition(":")
    spec = registry.get("methods", name)
    if argument and not spec.argument:
        raise TapweightError(f"method '{name}' takes no argument, got '{cfg.method}'")
    for other in cfg.weighting or {}:
        registry.get("methods", other)  # weighting.<method>.<option>: a misspelt method is an error
    weighting = spec.build(cfg, argument)
    if not isinstance(weighting, Weighting):
        raise TapweightError(f"method '{name}' (plugin {registry.owners[('methods', name)]}) built a "
                             f"{type(weighting).__name__}, not a tapweight Weighting")
    return weighting


def default_weighting(cfg: Any, learn_weights: bool, initial_weights: Sequence[float] | None) -> Weighting:
    """``tapweight`` (``learn_weights``) or fixed weights ``initial_weights`` (uniform when None):
    the engine's weighting when it is given none (tests, benchmarks)."""
    from tapweight.method.weightings.static import Uniform
    from tapweight.method.weightings.tapweight import TapWeight

    rule, name = (TapWeight, "tapweight") if learn_weights else (Uniform, "uniform")
    weighting = rule(dataclasses.replace(cfg, method=name))
    weighting.start = initial_weights
    return weighting
