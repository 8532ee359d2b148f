"""The gradient-cosine rules: ``cosine`` (META-TARTAN / AANG) and ``gating`` (Du et al.).

Both read cos(∇_θ L_k, u_b) for each objective (``gradients="backbone"``): the objective's
gradient on θ's backbone at level I's θ, against u_b = ∇_{w_b} L_val(w'), w's validation
gradient on its backbone after level II. u_b stands in for the papers' task gradient on the
shared body (META-TARTAN's dev head, Du et al.'s main loss): w is θ's backbone fine-tuned
with the proximal term γ‖w_b − θ_b‖², so it is the task's gradient at a point near θ, not at θ.
Both decide at level III, after level I's step: the weights they set are used from the next
step on (the papers apply theirs to the same step's gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tapweight.method.weightings.base import Signal, Weighting, check, logits


class Cosine(Weighting):
    """META-TARTAN (Dery, Michel, Talwalkar, Neubig, "Should We Be Pre-training? An Argument
    for End-task Aware Training as an Alternative", ICLR 2022) and AANG (Dery et al., ICLR
    2023): the task weights are a softmax over logits, and each step moves the logits by the
    cosine between the objective's gradient and the dev head's gradient on the shared body:

        α_k ← α_k + lr · cos(∇L_k, u_b)

    (the reference code, ldery/TARTAN ``MetaWeighter``: plain SGD on the logits with the
    gradient −cos, ``--meta-lr-weight`` 1e-2, the default here:
    ``weighting.cosine.lr``). Where it differs: u_b (above) for the dev head's gradient on θ.
    """

    learns = True
    gradients = "backbone"

    @dataclass
    class Options:
        lr: float = 0.01

    def __init__(self, cfg, argument: str = ""):
        super().__init__(cfg, argument)
        check(self.options.lr >= 0, f"cosine needs lr >= 0, got {self.options.lr}")

    def update(self, signal: Signal) -> torch.Tensor:
        return signal.alpha + self.options.lr * signal.cosines


class Gating(Weighting):
    """Du, Czarnecki, Jayakumar, Farajtabar, Pascanu, Lakshminarayanan, "Adapting Auxiliary
    Losses Using Gradient Similarity" (2018): an auxiliary loss is used only while the cosine
    of its gradient with the main task's is positive, θ ← θ − η (∇L_main + Σ_k 1[cos_k > 0] ∇L_k)
    (the unweighted variant; ``weighting.gating.weighted=true``: max(0, cos_k) as the weight,
    their weighted variant). Here there is no main loss at level I, so

        λ_k ∝ λ₀_k · 1[cos(∇L_k, u_b) > 0]        (weighted: λ₀_k · max(0, cos))

    with λ₀ the run's starting weights; when no cosine is positive, λ stays as it was (a
    step of level I on no objective cannot be expressed by weights that sum to 1).
    """

    learns = True
    gradients = "backbone"

    @dataclass
    class Options:
        weighted: bool = False

    def update(self, signal: Signal) -> torch.Tensor:
        c = signal.cosines
        if not bool((c > 0).any()):
            return signal.alpha
        k = len(c)
        start = torch.tensor(self.start, dtype=torch.float64) if self.start else torch.full((k,), 1.0 / k)
        gate = c.clamp_min(0) if self.options.weighted else (c > 0).double()
        lam = start * gate
        return logits(lam / lam.sum())
