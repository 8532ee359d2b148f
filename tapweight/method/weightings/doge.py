"""``doge``: DoGE's generalisation-estimation rule (Fan, Pagliardini, Jaggi, "DoGE: Domain
Reweighting with Generalization Estimation", ICML 2024; reference code Olivia-fsm/DoGE).

DoGE reweights training domains by how well each one's gradient serves the target: its
out-of-domain variant scores domain k by W_k = ⟨∇ℓ_k(θ), ∇ℓ_target(θ)⟩ and takes a
mirror-descent (exponentiated-gradient) step on the simplex. The reference code's step
(``trainer.py``, ``train_step_doge``) is, with η_t the model's current learning rate,

    s_k = clip(η_t · W_k / (mean_j ‖∇ℓ_j‖ + 10⁻⁶),  η_t·dw_min,  η_t·dw_max)
    λ ← softmax(log λ + s / μ);   λ ← (1 − ε) λ + ε / K

with μ = 0.05, dw_min = 0, dw_max = 5, ε = 0 by default (the defaults here:
``weighting.doge.mu``, ``score_min``, ``score_max``, ``smoothing``). Here the domains are
the objectives, the target gradient is u_b (w's validation gradient on its backbone, at w'
rather than θ: see cosine.py) and η_t is the rate of the step's level I update. Where it
differs: DoGE applies the new weights to the same step's gradients and reports the weights'
average over the run for a second training run; here they are used from the next step on,
and the run itself is the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tapweight.method.weightings.base import Signal, Weighting, check, logits


class DoGE(Weighting):
    """Exponentiated-gradient steps on λ from ⟨∇L_k, u_b⟩ over the mean gradient norm (module docstring)."""

    learns = True
    gradients = "backbone"

    @dataclass
    class Options:
        mu: float = 0.05
        score_min: float = 0.0
        score_max: float = 5.0
        smoothing: float = 0.0

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        o = self.options
        check(o.mu > 0 and o.score_min <= o.score_max and 0 <= o.smoothing <= 1,
              f"doge needs mu > 0, score_min <= score_max and smoothing in [0, 1], got {o}")
        self.lam: torch.Tensor | None = None  # λ in float64 (α holds it in float32)

    def update(self, signal: Signal) -> torch.Tensor:
        o, eta = self.options, signal.eta_pretrain
        lam = signal.lam if self.lam is None else self.lam
        score = eta * signal.dots / (signal.grad_norms.mean() + 1e-6)
        score = score.clamp(eta * o.score_min, eta * o.score_max)
        lam = torch.softmax(torch.log(lam) + score / o.mu, 0)
        self.lam = (1 - o.smoothing) * lam + o.smoothing / len(lam)
        return logits(self.lam)

    def state_dict(self) -> dict:
        return {"lam": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.lam = state["lam"]
