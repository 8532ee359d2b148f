"""The level III hypergradient ∂L_val/∂λ, and its methods behind one interface.

**One step (unroll 1), the default.** Level I and level II each take one optimizer step,

    θ' = θ + Δ₁(g),  g = Σ_k λ_k ∇L_k(θ)                    (+ weight decay, momentum, Adam state)
    w' = w + Δ₂(h),  h = ∇L_ft(w) + 2γ (w_b − θ'_b)

and every optimizer the config accepts updates each parameter from its own gradient entry,
so ∂Δ/∂g is diagonal: −η·P with P = 1 for SGD (momentum and weight decay do not depend on
the new gradient's direction) and, for Adam/AdamW (m, v after the step, t its count, s =
√(v/(1−β₂ᵗ))), exactly, v's dependence on g included:

    P = [ (1−β₁)/(s+ε) − m (1−β₂) g / ((1−β₂ᵗ) s (s+ε)²) ] / (1−β₁ᵗ)          (optim.py)

With u = ∇_w L_val(w') and the chain rule through h's only θ-term, −2γ θ'_b:

    dL_val/dλ_k = −2γ η₁ η₂ ⟨∇_θ L_k(θ), P₁ ⊙ P₂ ⊙ u_b⟩                            (1)

η₁, η₂ are the rates the two steps used (read before their schedulers stepped). The K dot
products are one directional derivative of the loss vector L(θ) ∈ R^K along the
preconditioned u_b: a central difference of two no-grad forwards (``fd``), a one-sided
difference that reuses level I's own L(θ) (``fd-forward``: one forward), or one
forward-mode JVP (``jvp``). No Hessian is needed: level II's mixed derivative is the
proximal term's 2γ·I. ``hyper_fraction < 1`` takes it on the first part of each level I
batch (an unbiased estimate for objectives that are means over examples, at a fraction of
the cost).

**Precision and estimators.** Each estimator (estimators.py, registered by name for
``reweight.hypergrad``) says in which precision it evaluates L: ``"float32"`` (autocast off,
no TF32: the central ``fd`` subtracts two loss vectors, ``jvp`` is exact only there),
``"tf32"`` (autocast off, TF32 as torch allows it: ~1e-3 relative) or ``"level_one"`` (exactly as level I ran,
the run's autocast included: ``fd-forward`` subtracts level I's own losses, so its one
forward must round like theirs). ``auto`` (the default) is the cheapest estimator whose
error is measured at ≤ 5 % of the hypergradient's validation-batch variance for the run's
settings (docs/benchmarks.md).

**Unroll T > 1** (SGD only; Adam's state makes later steps depend on earlier gradients in a
way we do not differentiate): reverse mode through the T steps of both levels, momentum
buffers included (:func:`unrolled`), with double-backward Hessian-vector products of level I
at θ_{t-1} and of level II at w_{t-1}. It is the exact derivative of L_val(w_T(λ)).

**Scale convention.** The reference code's Betty ``darts`` update drops the learning-rate
factors; the paper's α learning rate of 200 (SGD, γ = 1e-3) is tuned for that.
``scale="reference"`` (default) is the exact value divided by η₁η₂ of the last inner step;
``scale="exact"`` is the true derivative.

**Implicit (IFT) methods** (estimators.py) replace the unrolled steps by the optimality
conditions, as Betty's ``neumann`` and ``cg`` do: with H_ft = ∇²_w (L_ft + γ‖w_b − θ_b‖²),
H_pt = ∇²_θ Σλ_k L_k,

    v = H_ft⁻¹ u,   z = H_pt⁻¹ [2γ v_b ; 0],   dL_val/dλ_k = −⟨∇_θ L_k(θ), z⟩           (2)

exact for L_val(w*(θ*(λ))) when θ and w sit at their optima. Inverses come from Neumann
series (step α from a power-iteration estimate of ‖H‖ unless set) or conjugate gradients;
each warns, naming the remedy, when it has not converged.

Chain rule to α = softmax⁻¹(λ): ∂/∂α = λ ⊙ (g − ⟨λ, g⟩).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

Vector = list  # a list of tensors shaped like a parameter list; None entries are zero
HVP = Callable[[Vector], Vector]
#: how L(θ) is evaluated: float32 without TF32, float32 with TF32 (on CUDA), or as level I ran
Precision = Literal["float32", "tf32", "level_one"]


def dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b) if x is not None and y is not None)


def norm(a: Vector) -> torch.Tensor:
    """‖a‖ over all tensors (one fused per-tensor norm; no copies)."""
    parts = [t for t in a if t is not None]
    if not parts:
        return torch.zeros((), dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(parts)).double())


def combine(a: float, x: Vector, b: float, y: Vector) -> Vector:
    """a·x + b·y, tensor by tensor; None is zero."""
    out = []
    for s, t in zip(x, y):
        if s is None and t is None:
            out.append(None)
        elif t is None:
            out.append(a * s)
        elif s is None:
            out.append(b * t)
        else:
            out.append(a * s + b * t)
    return out


def times(p: Vector | None, x: Vector) -> Vector:
    """P ⊙ x on the first len(P) tensors (a diagonal preconditioner; None is the identity)."""
    if p is None:
        return list(x)
    return [t if t is None else q * t for q, t in zip(p, x)] + list(x[len(p):])


def softmax_vjp(lam: torch.Tensor, g_lam: torch.Tensor) -> torch.Tensor:
    """∂L/∂α from ∂L/∂λ for λ = softmax(α): Jᵀg with J = diag(λ) − λλᵀ (on ``g_lam``'s device)."""
    lam = lam.to(g_lam)
    return lam * (g_lam - (lam * g_lam).sum())


# -- directional derivatives of the loss vector L(θ) ∈ R^K ---------------------------------------

def directional_fd(losses: Callable[[Vector], torch.Tensor], point: Vector, direction: Vector,
                   radius: float, at_point: torch.Tensor | None = None) -> torch.Tensor:
    """⟨∇L_k(point), d⟩ for all k by a finite difference of no-grad forwards.

    The step is ε = radius / ‖d‖, so the perturbation has norm ``radius`` (Betty's darts);
    ε stays on the device (no host sync; d = 0 gives 0). Central (two forwards, O(ε²) error)
    unless ``at_point`` = L(point) is given: then one-sided (one forward, O(ε) error).
    """
    moving = [i for i, d in enumerate(direction) if d is not None]
    if not moving:
        with torch.no_grad():
            return torch.zeros_like(losses(point) if at_point is None else at_point).double()
    size = norm(direction).clamp_min(torch.finfo(torch.float32).tiny)
    eps = radius / size
    unit = torch._foreach_div([direction[i].to(point[i].dtype) for i in moving], size.float())

    def shifted(sign: float) -> Vector:  # point ± radius·d/‖d‖, one fused add; untouched tensors shared
        out = list(point)
        for i, t in zip(moving, torch._foreach_add([point[i] for i in moving], unit, alpha=sign * radius)):
            out[i] = t
        return out

    with torch.no_grad():
        l_plus = losses(shifted(1.0))
        if at_point is not None:
            return (l_plus.double() - at_point.double()) / eps
        l_minus = losses(shifted(-1.0))
    return (l_plus.double() - l_minus.double()) / (2 * eps)


def directional_jvp(losses: Callable[[Vector], torch.Tensor], point: Vector,
                    direction: Vector) -> torch.Tensor:
    """⟨∇L_k(point), d⟩ for all k by one forward-mode JVP (torch.func.jvp).

    The tangent is d/‖d‖ (so half precision neither overflows nor underflows), the result
    scaled back by ‖d‖, which stays on the device (no host sync; d = 0 gives 0).
    """
    size = norm(direction).clamp_min(torch.finfo(torch.float32).tiny)
    tangents = tuple(torch.zeros_like(p) if d is None else (d / size).to(p.dtype)
                     for p, d in zip(point, direction))
    with torch.no_grad():
        _, out = torch.func.jvp(lambda *ps: losses(list(ps)), tuple(p.detach() for p in point),
                                tangents)
    return out.double() * size


# -- what the engine hands over ----------------------------------------------------------------

@dataclass
class InnerStep:
    """One level I + level II step, as the hypergradient needs it.

    ``losses(params, precision)`` is L(θ) ∈ R^K on this step's level I batches (their random
    draws replayed) with θ's parameters replaced by ``params`` (θ_b first), in ``precision``
    (:data:`Precision`);
    ``theta`` is θ before the level I step. The rates are those the steps used; the
    preconditioners (None: 1) are P of eq. (1) on θ_b and w_b. Unroll > 1 also needs w
    before the level II step, ``finetune_loss(params)`` = L_ft on its batch, and the SGD
    momenta and weight decays.
    """

    theta: Vector
    losses: Callable[[Vector, Precision], torch.Tensor]
    eta_pretrain: float
    eta_finetune: float
    precondition_pretrain: Vector | None = None
    precondition_finetune: Vector | None = None
    losses_at_theta: torch.Tensor | None = None  # level I's own L(θ), for the one-sided difference
    w: Vector | None = None
    finetune_loss: Callable[[Vector], torch.Tensor] | None = None
    momentum_pretrain: float = 0.0
    momentum_finetune: float = 0.0
    decay_pretrain: float = 0.0
    decay_finetune: float = 0.0


@dataclass
class Problem:
    """What one global step hands to a hypergradient method: its inner steps (oldest first),
    u = ∇_w L_val(w_T) over all of w's parameters (w_b first), γ, the size of θ_b, and θ after
    the last step (for the implicit methods)."""

    steps: list[InnerStep]
    u: Vector
    gamma: float
    n_backbone: int
    theta_after: Vector = field(default_factory=list)
    # the implicit methods' Hessians at θ and w after the last step; built by the engine on demand
    hvp_finetune: HVP | None = None
    hvp_pretrain: HVP | None = None


def hessian_vector_product(loss_fn: Callable[[], torch.Tensor], params: Vector,
                           extra: Callable[[Vector], Vector] | None = None) -> HVP:
    """An HVP closure for ∇²loss at ``params``: one forward and backward with a graph,
    then one double-backward per product. ``extra(v)`` adds a closed-form term (2γv_b)."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    # gradients that do not depend on any parameter (or are absent) have a zero Hessian row
    rows = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def hvp(v: Vector) -> Vector:
        hv = [torch.zeros_like(p) for p in params]
        if rows:
            products = torch.autograd.grad([grads[i] for i in rows], params,
                                           grad_outputs=[v[i].detach() for i in rows],
                                           retain_graph=True, allow_unused=True)
            hv = [z if h is None else h.detach() for z, h in zip(hv, products)]
        if extra is not None:
            hv = [h + e for h, e in zip(hv, extra(v))]
        return hv

    return hvp


class Hypergradient:
    """∂L_val/∂λ ∈ R^K by one registered estimator (tapweight/method/estimators.py): eq. (1),
    or reverse mode for unroll > 1, from the estimator's directional derivatives; eq. (2)
    from an implicit one (``needs_hessians``). ``scale`` as in the module docstring."""

    def __init__(self, estimator, scale: str = "reference"):
        self.estimator, self.scale = estimator, scale

    @property
    def method(self) -> str:
        return self.estimator.name

    @property
    def needs_hessians(self) -> bool:
        return self.estimator.needs_hessians

    def __call__(self, problem: Problem, hvps: Callable[[int], tuple[HVP, HVP]] | None = None) -> torch.Tensor:
        """``hvps(t)`` gives (H_pt at θ_{t-1}, H_ft at w_{t-1}) of inner step t (unroll > 1)."""
        if self.needs_hessians:
            return self.estimator.implicit(problem)
        last = problem.steps[-1]
        if len(problem.steps) == 1:
            g = one_step(problem, self.estimator.directional)
        else:
            g = unrolled(problem, self.estimator.directional, hvps)
        if self.scale == "reference":
            g = g / (last.eta_pretrain * last.eta_finetune)
        return g


def one_step(problem: Problem, directional: Callable[[InnerStep, Vector], torch.Tensor]) -> torch.Tensor:
    """Eq. (1): −2γ η₁ η₂ ⟨∇L_k(θ), P₁ ⊙ P₂ ⊙ u_b⟩ as one directional derivative."""
    (step,) = problem.steps
    nb = problem.n_backbone
    u_b = times(step.precondition_finetune, list(problem.u[:nb]))
    direction = times(step.precondition_pretrain, u_b) + [None] * (len(step.theta) - nb)
    scale = -2 * problem.gamma * step.eta_pretrain * step.eta_finetune
    return scale * directional(step, direction)


def unrolled(problem: Problem, directional: Callable[[InnerStep, Vector], torch.Tensor],
             hvps: Callable[[int], tuple[HVP, HVP]]) -> torch.Tensor:
    """dL_val(w_T)/dλ through T SGD steps of both levels, in reverse mode.

    Forward, for t = 1..T (b, c: the momentum buffers of θ and w; d₁, d₂ the weight decays):

        g_t = Σλ_k ∇L_k(θ_{t-1}) + d₁θ_{t-1},  b_t = μ₁b_{t-1} + g_t,  θ_t = θ_{t-1} − η₁ᵗ b_t
        h_t = ∇L_ft(w_{t-1}) + 2γ(w_{t-1,b} − θ_{t,b}) + d₂w_{t-1},  c_t = μ₂c_{t-1} + h_t,
        w_t = w_{t-1} − η₂ᵗ c_t

    Backward, from ā(w_T) = u: each step adds ⟨∇L_k(θ_{t-1}), ā(g_t)⟩ to dL/dλ_k and, for
    t > 1, carries the adjoints to θ_{t-1} and w_{t-1} with one Hessian-vector product per level.
    """
    nb, gamma, steps = problem.n_backbone, problem.gamma, problem.steps
    n_theta = len(steps[0].theta)
    a_w = list(problem.u)  # ā(w_t)
    a_c: Vector = [None] * len(a_w)  # ā(c_{t+1}) → ā(c_t)
    a_theta: Vector = [None] * n_theta  # ā(θ_t) from θ_{t+1} and g_{t+1}
    a_b: Vector = [None] * n_theta  # ā(b_{t+1}) → ā(b_t)
    total = None
    for t in range(len(steps) - 1, -1, -1):
        s = steps[t]
        a_c = combine(s.momentum_finetune, a_c, -s.eta_finetune, a_w)
        a_theta = combine(1.0, a_theta, -2 * gamma, a_c[:nb] + [None] * (n_theta - nb))
        a_b = combine(s.momentum_pretrain, a_b, -s.eta_pretrain, a_theta)
        g = directional(s, a_b)
        total = g if total is None else total + g
        if t > 0:
            hvp_pt, hvp_ft = hvps(t)
            a_g = [torch.zeros_like(p) if x is None else x for p, x in zip(s.theta, a_b)]
            a_h = [torch.zeros_like(p) if x is None else x for p, x in zip(s.w, a_c)]
            a_theta = combine(1.0, combine(1.0, a_theta, 1.0, hvp_pt(a_g)), s.decay_pretrain, a_g)
            ft = combine(1.0, hvp_ft(a_h), s.decay_finetune, a_h)
            ft = combine(1.0, ft, 2 * gamma, a_h[:nb] + [None] * (len(a_h) - nb))
            a_w = combine(1.0, a_w, 1.0, ft)
    return total
