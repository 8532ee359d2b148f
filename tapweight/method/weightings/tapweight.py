"""The hypergradient rules: ``tapweight``, ``tapweight-normalized``, ``olaux``.

All three read dL_val/dλ (``hypergradient``: the engine's estimator, ``reweight.hypergrad``),
the derivative of w's validation loss after one level I and one level II step with respect
to λ; they differ in how a step of α is made from it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from tapweight.method.hypergrad import softmax_vjp
from tapweight.method.weightings.base import Signal, Weighting, check


class TapWeight(Weighting):
    """TapWeight (Zhang, Somayajula, Xie, TMLR 2025): α ← α − η₃ ∂L_val/∂α, λ = softmax(α),
    with level III's optimizer and scheduler (``reweight.optimizer``, ``lr``, ``scheduler``:
    SGD at rate 200 and StepLR(100, 0.9) by default, the reference code's)."""

    learns = True
    hypergradient = True

    def update(self, signal: Signal) -> torch.Tensor:
        alpha = signal.reweight.step(signal.lam, signal.hypergrad)
        signal.reweight.schedule()
        return alpha


class TapWeightNormalized(TapWeight):
    """TapWeight with its α step divided by the hypergradient's running scale:

        v_t = β v_{t−1} + (1 − β) mean_k(g_k²),   s_t = √(v_t / (1 − βᵗ))
        α ← α − lr · ∂L_val/∂α (g / s_t)

    Why TapWeight's λ freezes (measured on BBBP, docs/known-answer.md): after the first steps every objective's
    cosine with the validation gradient is ~0.005 and the hypergradient 10–100× smaller than
    at step 1, so a rate tuned for step 1 moves nothing later. Dividing by one running scale
    (a scalar, unlike Adam on α, which normalises each objective on its own and so
    exaggerates the differences between them) keeps the step's size and the hypergradient's
    direction. Plain SGD at ``weighting.tapweight-normalized.lr`` (default 0.1: a consistent
    sign moves α by ~lr/K per step, noise by ~lr/K·√t); ``reweight.*`` is not used.
    """

    @dataclass
    class Options:
        lr: float = 0.1
        beta: float = 0.9  # the running mean's decay

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        o = self.options
        check(o.lr >= 0 and 0 <= o.beta < 1,
              f"tapweight-normalized needs lr >= 0 and beta in [0, 1), got lr={o.lr}, beta={o.beta}")
        self.v, self.t = 0.0, 0

    def update(self, signal: Signal) -> torch.Tensor:
        g, o = signal.hypergrad.double(), self.options
        self.t += 1
        self.v = o.beta * self.v + (1 - o.beta) * float(g.pow(2).mean())
        scale = math.sqrt(self.v / (1 - o.beta ** self.t))
        if scale == 0:
            return signal.alpha
        return signal.alpha - o.lr * softmax_vjp(signal.lam, g / scale)

    def state_dict(self) -> dict:
        return {"v": self.v, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.v, self.t = state["v"], state["t"]


class OLAux(TapWeight):
    """OL-AUX (Lin, Baweja, Kantor, Held, "Adaptive Auxiliary Task Weighting for
    Reinforcement Learning", NeurIPS 2019): the weights take one step every N steps, from the
    gradient of the main loss N steps ahead, approximated by the sum over the horizon of the
    one-step terms −η ⟨∇L_main(θ_t), ∇L_k(θ_t)⟩:

        G ← Σ_{t in the horizon} dL_val/dλ(t);   every N steps: a step of α from G, G ← 0

    Here the main loss is w's validation loss and each one-step term is the engine's
    hypergradient (the same −2γη₁η₂⟨∇L_k, u_b⟩ as TapWeight's). Where it differs: the paper
    steps the weights themselves by SGD; here they are λ = softmax(α) and the step is level
    III's optimizer (``reweight.*``, as TapWeight's, so the two differ only in the horizon),
    its scheduler stepped every global step. ``weighting.olaux.horizon`` = N (default 5).
    """

    @dataclass
    class Options:
        horizon: int = 5

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        check(self.options.horizon >= 1, f"olaux needs horizon >= 1, got {self.options.horizon}")
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, signal: Signal) -> torch.Tensor:
        g, alpha = signal.hypergrad.double(), signal.alpha
        self.total = g.clone() if self.total is None else self.total + g
        self.count += 1
        if self.count == self.options.horizon:
            alpha = signal.reweight.step(signal.lam, self.total)
            self.total, self.count = None, 0
        with warnings.catch_warnings():  # the rate follows global steps; the optimizer steps every N
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step()` before")
            signal.reweight.schedule()
        return alpha

    def state_dict(self) -> dict:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.count = state["total"], state["count"]
