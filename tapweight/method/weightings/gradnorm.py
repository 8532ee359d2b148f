"""``gradnorm``: GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018), the
task-agnostic control: it balances how fast the objectives train and reads no task signal,
so levels II and III do not run.

With weights w_i (Σ w_i = K), G_i = ‖∇_W w_i L_i‖ on the last shared layer W, Ḡ = mean_i G_i,
the inverse training rates r_i = L̃_i / mean_j L̃_j of L̃_i = L_i(t)/L_i(0), and the asymmetry a:

    L_grad = Σ_i | G_i − Ḡ · r_i^a |,   the target Ḡ r_i^a held constant,
    w_i ← w_i − lr · ∂L_grad/∂w_i = w_i − lr · sign(G_i − Ḡ r_i^a) · ‖∇_W L_i‖,
    then renormalised to Σ w_i = K.

W is the backbone's last weight tensor (``gradients="last"``: K backward passes through the
heads and that layer only, the paper's way of keeping the cost low). λ = w / K (the engine's
weights sum to 1, so λ is w up to the factor the uniform baseline has too). Options
``weighting.gradnorm.asymmetry`` (a; the paper's NYUv2 value 1.5) and ``lr`` (0.025, a
choice: the paper gives none for w). Where it differs: a weight pushed below 0 by the step is
set to 0 before the renormalisation (the paper does not say), and the step is plain SGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tapweight.method.weightings.base import Signal, Weighting, check, logits


class GradNorm(Weighting):
    """Weights that equalise the objectives' gradient norms, scaled by their training rates."""

    gradients = "last"

    @dataclass
    class Options:
        asymmetry: float = 1.5
        lr: float = 0.025

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        o = self.options
        check(o.asymmetry >= 0 and o.lr >= 0, f"gradnorm needs asymmetry >= 0 and lr >= 0, got {o}")
        self.w: torch.Tensor | None = None  # Σ w = K
        self.first: torch.Tensor | None = None  # L_i(0)

    def update(self, signal: Signal) -> torch.Tensor:
        o, losses, norms = self.options, signal.losses.double(), signal.grad_norms.double()
        k = len(losses)
        w = k * signal.lam if self.w is None else self.w
        if self.first is None:
            self.first = losses.clamp_min(1e-12)
        rate = losses / self.first
        g = w * norms
        target = g.mean() * (rate / rate.mean()) ** o.asymmetry
        w = (w - o.lr * torch.sign(g - target) * norms).clamp_min(0)
        self.w = k * w / w.sum() if w.sum() > 0 else torch.ones(k, dtype=torch.float64)
        return logits(self.w / k)

    def state_dict(self) -> dict:
        return {"w": self.w, "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.w, self.first = state["w"], state["first"]
