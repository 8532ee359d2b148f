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
buffers included (`unrolled`), with double-backward Hessian-vector products of level I
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

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from tapweight.method.levels import InnerStep, Vector

HVP = Callable[[Vector], Vector]


def dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b) if x is not None and y is not None)


def norm(a: Vector) -> torch.Tensor:
    """‖a‖ over all tensors (one fused per-tensor norm; no copies)."""
    parts = [t for t in a if t is not None]
    if not parts:
        return torch.zeros((), dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(parts)).double())


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
    # ε·d in the parameters' precision, ε a device scalar: θ ± ε·d rounds as with a host ε
    step = torch._foreach_mul([direction[i].to(point[i].dtype) for i in moving], eps.to(point[moving[0]].dtype))

    def shifted(sign: float) -> Vector:  # point ± ε·d, one fused add; untouched tensors shared
        out = list(point)
        for i, t in zip(moving, torch._foreach_add([point[i] for i in moving], step, alpha=sign)):
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

Named = dict  # parameter name -> tensor; a name that is absent is zero


@dataclass(frozen=True)
class Names:
    """The parameter names of θ and of w, in the order of their vectors (θ's, w's), and the
    pairs the proximal term γ‖w_b − θ_b‖² ties: (θ_b's name, w_b's name), in θ's order."""

    theta: tuple[str, ...]
    w: tuple[str, ...]
    backbone: tuple[tuple[str, str], ...]

    @classmethod
    def matched(cls, theta: Sequence[str], w: Sequence[str], prefix: str = "backbone.") -> Names:
        """θ's and w's names, their backbones paired by name (``prefix`` starts a backbone's)."""
        pairs = tuple((n, n) for n in theta if n.startswith(prefix))
        if {n for n, _ in pairs} != {n for n in w if n.startswith(prefix)}:
            raise ValueError("θ and w backbones differ: the proximal term needs the same parameters")
        return cls(tuple(theta), tuple(w), pairs)

    def on_theta(self, x: Named) -> Named:
        """w_b's entries of ``x`` under their θ_b names (the proximal term's coupling)."""
        return {t: x[w] for t, w in self.backbone if w in x}

    def on_w(self, x: Named) -> Named:
        """θ_b's entries of ``x`` under their w_b names."""
        return {w: x[t] for t, w in self.backbone if t in x}

    def w_backbone(self, x: Named) -> Named:
        """The w_b part of ``x`` (over w's names)."""
        return {w: x[w] for _, w in self.backbone if w in x}


def named(names: Sequence[str], x: Vector | None) -> Named:
    """A vector in the order of ``names`` (its leading part, when shorter) by name; None entries
    (zero) and None (the identity, for a preconditioner) are left out."""
    return {} if x is None else {n: t for n, t in zip(names, x) if t is not None}


def ordered(names: Sequence[str], x: Named) -> Vector:
    """``x`` as a vector in the order of ``names``, None where it has no entry."""
    return [x.get(n) for n in names]


def combine(a: float, x: Named, b: float, y: Named) -> Named:
    """a·x + b·y, name by name; an absent name is zero."""
    out = {}
    for n in dict.fromkeys([*x, *y]):
        s, t = x.get(n), y.get(n)
        out[n] = a * s if t is None else b * t if s is None else a * s + b * t
    return out


def times(p: Named | None, x: Named) -> Named:
    """P ⊙ x, name by name (a diagonal preconditioner; None or a missing name is the identity)."""
    if p is None:
        return dict(x)
    return {n: t if n not in p else p[n] * t for n, t in x.items()}


@dataclass
class Problem:
    """What one global step hands to a hypergradient method: its inner steps (oldest first),
    u = ∇_w L_val(w_T) over all of w's parameters (in w's order, ``names.w``), γ, the names of
    θ's and w's parameters with their matched backbones, and θ after the last step (for the
    implicit methods)."""

    steps: list[InnerStep]
    u: Vector
    gamma: float
    names: Names
    theta_after: Vector = field(default_factory=list)
    # the implicit methods' Hessians at θ and w after the last step; built by the engine on demand
    hvp_finetune: HVP | None = None
    hvp_pretrain: HVP | None = None

    @property
    def n_backbone(self) -> int:
        """How many tensors θ_b (and w_b) has; they lead θ's and w's vectors."""
        return len(self.names.backbone)

    def u_named(self) -> Named:
        return named(self.names.w, self.u)


def hessian_vector_product(loss_fn: Callable[[], torch.Tensor], params: Vector,
                           extra: Callable[[Vector], Vector] | None = None,
                           arithmetic: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> HVP:
    """An HVP closure for ∇²loss at ``params``: one forward and backward with a graph,
    then one double-backward per product, each pass inside ``arithmetic()`` (the engine's:
    float32 without TF32). ``extra(v)`` adds a closed-form term (2γv_b)."""
    with arithmetic():
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    # gradients that do not depend on any parameter (or are absent) have a zero Hessian row
    rows = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def hvp(v: Vector) -> Vector:
        hv = [torch.zeros_like(p) for p in params]
        if rows:
            with arithmetic():
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

    def __init__(self, estimator, scale: str = "reference", reason: str = ""):
        self.estimator, self.scale, self.reason = estimator, scale, reason  # reason: why this estimator

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
            g = g / (last.pretrain.eta * last.finetune.eta)
        return g


def one_step(problem: Problem, directional: Callable[[InnerStep, Vector], torch.Tensor]) -> torch.Tensor:
    """Eq. (1): −2γ η₁ η₂ ⟨∇L_k(θ), P₁ ⊙ P₂ ⊙ u_b⟩ as one directional derivative."""
    (step,) = problem.steps
    one, two, names = step.pretrain, step.finetune, problem.names
    u_b = times(named(names.w, two.precondition), names.w_backbone(problem.u_named()))
    direction = times(named(names.theta, one.precondition), names.on_theta(u_b))
    scale = -2 * problem.gamma * one.eta * two.eta
    return scale * directional(step, ordered(names.theta, direction))


def unrolled(problem: Problem, directional: Callable[[InnerStep, Vector], torch.Tensor],
             hvps: Callable[[int], tuple[HVP, HVP]]) -> torch.Tensor:
    """dL_val(w_T)/dλ through T SGD steps of both levels, in reverse mode.

    Forward, for t = 1..T (b, c: the momentum buffers of θ and w; d₁, d₂ the weight decays):

        g_t = Σλ_k ∇L_k(θ_{t-1}) + d₁θ_{t-1},  b_t = μ₁b_{t-1} + g_t,  θ_t = θ_{t-1} − η₁ᵗ b_t
        h_t = ∇L_ft(w_{t-1}) + 2γ(w_{t-1,b} − θ_{t,b}) + d₂w_{t-1},  c_t = μ₂c_{t-1} + h_t,
        w_t = w_{t-1} − η₂ᵗ c_t

    Backward, from ā(w_T) = u: each step adds ⟨∇L_k(θ_{t-1}), ā(g_t)⟩ to dL/dλ_k and, for
    t > 1, carries the adjoints to θ_{t-1} and w_{t-1} with one Hessian-vector product per level.
    The adjoints are keyed by parameter name (θ's or w's); the proximal term moves w_b's onto
    θ_b's through the matched pairs (``problem.names``).
    """
    gamma, steps, names = problem.gamma, problem.steps, problem.names
    a_w = problem.u_named()  # ā(w_t)
    a_c: Named = {}  # ā(c_{t+1}) → ā(c_t)
    a_theta: Named = {}  # ā(θ_t) from θ_{t+1} and g_{t+1}
    a_b: Named = {}  # ā(b_{t+1}) → ā(b_t)
    total = None
    for t in range(len(steps) - 1, -1, -1):
        one, two = steps[t].pretrain, steps[t].finetune
        a_c = combine(two.momentum, a_c, -two.eta, a_w)
        a_theta = combine(1.0, a_theta, -2 * gamma, names.on_theta(a_c))
        a_b = combine(one.momentum, a_b, -one.eta, a_theta)
        g = directional(steps[t], ordered(names.theta, a_b))
        total = g if total is None else total + g
        if t > 0:
            hvp_pt, hvp_ft = hvps(t)
            a_g = [torch.zeros_like(p) if x is None else x for p, x in zip(one.theta, ordered(names.theta, a_b))]
            a_h = [torch.zeros_like(p) if x is None else x for p, x in zip(two.w, ordered(names.w, a_c))]
            a_theta = combine(1.0, combine(1.0, a_theta, 1.0, named(names.theta, hvp_pt(a_g))),
                              one.decay, named(names.theta, a_g))
            ft = combine(1.0, named(names.w, hvp_ft(a_h)), two.decay, named(names.w, a_h))
            ft = combine(1.0, ft, 2 * gamma, names.w_backbone(named(names.w, a_h)))
            a_w = combine(1.0, a_w, 1.0, ft)
    return total
