"""What the three levels hand each other: one frozen record per level and step.

A global step of the engine (engine.py) is three functions, each returning its record:

    pretrain_step  -> LevelOne     θ before the step, the objectives' losses L(θ), the step's rate
    finetune_step  -> LevelTwo     L_ft + γ‖w_b − θ_b‖², the step's rate, w before it (unroll > 1)
    reweight_step  -> LevelThree   L_val(w'), u = ∇_w L_val(w'), the hypergradient dL_val/dλ

The hypergradient (hypergrad.py) reads a level I and a level II record of the same inner step
(`InnerStep`); a weighting reads the `Signal`
the engine makes of the three. Nothing here survives the global step: what does (α, the
optimizers, a rule's state) is the engine's ``State``, which the checkpoint saves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Vector = list  # a list of tensors shaped like a parameter list; None entries are zero
#: how L(θ) is evaluated: float32 without TF32, float32 with TF32 (on CUDA), or as level I ran
Precision = Literal["float32", "tf32", "level_one"]


@dataclass(frozen=True)
class LevelOne:
    """One level I step: θ ← θ − η₁ ∇_θ Σ_k λ_k L_k(θ).

    ``losses`` are L(θ) ∈ R^K (unweighted, the mean over the step's micro-batches and the
    processes); ``local_losses`` this process's alone, as level I computed them (the one-sided
    difference subtracts them). ``eta`` is the rate the step used (before its scheduler
    stepped); ``skipped``: fp16's GradScaler skipped the step (θ' = θ), a device tensor under
    fp16 (the step's read tells), else False.

    For the weightings that learn, also what the hypergradient needs: ``theta``, θ before the
    step (θ_b first); ``batches``, the step's (level I batch, seed) pairs, cut to
    ``reweight.hyper_fraction``; ``evaluate(params, precision)`` = L at θ's parameters replaced
    by ``params`` on those batches, their random draws replayed (`Precision`);
    ``precondition``, P₁ of hypergrad.py's eq. (1) on θ_b (None: 1); the SGD ``momentum`` and
    ``decay`` (weight decay) of the step.
    """

    losses: torch.Tensor
    local_losses: torch.Tensor
    eta: float
    skipped: torch.Tensor | bool = False
    theta: Vector = ()
    batches: Sequence[tuple[Any, int]] = ()
    evaluate: Callable[[Vector, Precision], torch.Tensor] | None = None
    precondition: Vector | None = None
    momentum: float = 0.0
    decay: float = 0.0


@dataclass(frozen=True)
class LevelTwo:
    """One level II step: w ← w − η₂ ∇_w [L_ft(w) + γ‖w_b − θ_b‖²].

    ``loss`` is L_ft + γ‖w_b − θ_b‖² before the step (on the device); ``eta`` its rate;
    ``precondition`` P₂ of eq. (1) on w_b (None: 1); ``skipped`` as level I's. Unroll > 1 also
    needs ``w`` before the step (w_b first), ``finetune_loss(params)`` = L_ft on the step's batch at w's parameters
    replaced by ``params``, and the step's SGD ``momentum`` and weight ``decay``.
    """

    loss: torch.Tensor
    eta: float
    skipped: torch.Tensor | bool = False
    precondition: Vector | None = None
    w: Vector | None = None
    finetune_loss: Callable[[Vector], torch.Tensor] | None = None
    momentum: float = 0.0
    decay: float = 0.0


@dataclass(frozen=True)
class InnerStep:
    """A level I step and the level II step after it: what the hypergradient differentiates."""

    pretrain: LevelOne
    finetune: LevelTwo


@dataclass(frozen=True)
class LevelThree:
    """Level III: w's validation loss L_val(w') and what was made of it.

    ``values`` are ``val_loss`` and ``val_overconfidence`` (the step record's columns); ``u`` is
    ∇_w L_val(w') over w's parameters (w_b first; None when a skipped level I/II step left
    nothing to learn from); ``hypergrad`` is dL_val/dλ ∈ R^K (float64, CPU) when the weighting
    reads it. ``skipped``: GradScaler skipped a level I/II step of the global step, so L_val
    does not depend on its λ (no u; the hypergradient is 0 and α keeps its value).
    """

    values: dict[str, float]
    u: Vector | None = None
    hypergrad: torch.Tensor | None = None
    skipped: bool = False
