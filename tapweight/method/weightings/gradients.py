"""Each objective's own gradient on θ's backbone, for the rules that read norms and cosines.

Level I backpropagates Σ_k λ_k L_k, which mixes the K gradients. A rule that needs them apart
(cosine, gating, DoGE, GradNorm) declares ``gradients``; then, before level I's backward, the
engine takes ∇L_k for each k through the same graph (``torch.autograd.grad``, the graph
retained), on the backbone parameters (``"backbone"``) or on the backbone's last weight
tensor only (``"last"``: GradNorm's "last shared layer", a backward through the heads and that
layer alone). That is K extra backward passes per level I step and K gradients in memory;
a rule that does not declare ``gradients`` pays nothing (``python -m bench step`` measures
it, docs/weightings.md). Under torchrun the gradients are averaged over ranks, as level I's.
"""

from __future__ import annotations

import torch

from tapweight import distributed
from tapweight.errors import TapweightError


def last_weight(names: list[str], params: list[torch.Tensor]) -> int:
    """Index of the backbone's last weight tensor (≥ 2 dimensions: a linear or convolution
    weight, not a bias or a norm's scale)."""
    for i in range(len(params) - 1, -1, -1):
        if names[i].startswith("backbone.") and params[i].ndim >= 2:
            return i
    raise TapweightError("gradients='last' needs a backbone with a weight matrix; this one has none")


class ObjectiveGradients:
    """∇_θ L_k (k = 1..K) on a subset of θ's backbone parameters, accumulated over one level I
    step's micro-batches. ``index`` are the positions of those parameters in θ's parameter
    list (θ_b first, so they are also the positions of the matching tensors of u_b)."""

    def __init__(self, names: list[str], params: list[torch.Tensor], n_backbone: int, which: str):
        self.index = list(range(n_backbone)) if which == "backbone" else [last_weight(names, params)]
        self.params = [params[i] for i in self.index]
        self.grads: list[list[torch.Tensor]] = []

    @classmethod
    def of(cls, weighting, names: list[str], params: list[torch.Tensor], n_backbone: int):
        """The gradients ``weighting`` declares it reads, or None when it reads none."""
        return cls(names, params, n_backbone, weighting.gradients) if weighting.gradients else None

    def add(self, losses: torch.Tensor, micro: int, accumulate: int, scale: torch.Tensor | float = 1.0) -> None:
        """∇L_k of micro-batch ``micro`` of ``accumulate`` (``losses``: K, with their graph,
        which is kept for level I's backward), into the step's mean; after the last, the mean
        over ranks. Under fp16 each is taken of ``scale`` · L_k, then divided by it (no underflow)."""
        new = []
        for k in range(len(losses)):
            grads = torch.autograd.grad(losses[k] * scale, self.params, retain_graph=True, allow_unused=True)
            new.append([torch.zeros_like(p) if g is None else g.detach() / (scale * accumulate)
                        for p, g in zip(self.params, grads)])
        if micro == 0:
            self.grads = new
        else:
            for mine, more in zip(self.grads, new):
                torch._foreach_add_(mine, more)
        if micro == accumulate - 1:
            for grads in self.grads:
                distributed.mean_(grads)

    def norms(self) -> torch.Tensor:
        """‖∇L_k‖ for each k (float64, CPU)."""
        return torch.stack([torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g)).double())
                            for g in self.grads]).cpu()

    def dots(self, u: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
        """(⟨∇L_k, u⟩ for each k, ‖u‖) over the chosen parameters; ``u`` is aligned with θ's
        parameter list from its start (w's u_b)."""
        part = [u[i].double() for i in self.index]
        dots = torch.stack([sum((g.double() * v).sum() for g, v in zip(grads, part)) for grads in self.grads])
        size = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(part)))
        return dots.cpu(), float(size)
