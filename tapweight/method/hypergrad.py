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
difference that reuses level I's own L(θ) (``fd_scheme="forward"``: one forward), or one
forward-mode JVP (``jvp``). No Hessian is needed: level II's mixed derivative is the
proximal term's 2γ·I. ``hyper_fraction < 1`` takes it on the first part of each level I
batch (an unbiased estimate for objectives that are means over examples, at a fraction of
the cost).

**Precision.** Whatever the run's ``amp``, the hypergradient's forwards run in float32:
``fd`` subtracts two loss vectors, so without TF32 either; ``jvp`` differentiates directly, so
TF32 (on CUDA, where torch allows it) costs it nothing in accuracy. ``auto`` (the default) is
``fd``, or ``jvp`` under AMP (whose float32 forwards TF32 makes fast) or with unroll > 1.

**Unroll T > 1** (SGD only; Adam's state makes later steps depend on earlier gradients in a
way we do not differentiate): reverse mode through the T steps of both levels, momentum
buffers included (:func:`unrolled`), with double-backward Hessian-vector products of level I
at θ_{t-1} and of level II at w_{t-1}. It is the exact derivative of L_val(w_T(λ)).

**Scale convention.** The reference code's Betty ``darts`` update drops the learning-rate
factors; the paper's α learning rate of 200 (SGD, γ = 1e-3) is tuned for that.
``scale="reference"`` (default) is the exact value divided by η₁η₂ of the last inner step;
``scale="exact"`` is the true derivative.

**Implicit (IFT) methods** replace the unrolled steps by the optimality conditions, as
Betty's ``neumann`` and ``cg`` do: with H_ft = ∇²_w (L_ft + γ‖w_b − θ_b‖²), H_pt = ∇²_θ Σλ_k L_k,

    v = H_ft⁻¹ u,   z = H_pt⁻¹ [2γ v_b ; 0],   dL_val/dλ_k = −⟨∇_θ L_k(θ), z⟩           (2)

exact for L_val(w*(θ*(λ))) when θ and w sit at their optima. Inverses come from Neumann
series (step α from a power-iteration estimate of ‖H‖ unless set) or conjugate gradients;
each warns, naming the remedy, when it has not converged.

Chain rule to α = softmax⁻¹(λ): ∂/∂α = λ ⊙ (g − ⟨λ, g⟩).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

Vector = list  # a list of tensors shaped like a parameter list; None entries are zero
HVP = Callable[[Vector], Vector]
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


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

    The step is ε = radius / ‖d‖, so the perturbation has norm ``radius`` (Betty's darts).
    Central (two forwards, O(ε²) error) unless ``at_point`` = L(point) is given: then
    one-sided (one forward, O(ε) error).
    """
    size = float(norm(direction))
    moving = [i for i, d in enumerate(direction) if d is not None]

    def shifted(step: float) -> Vector:  # point + step·d, one fused add; untouched tensors shared
        out = list(point)
        for i, t in zip(moving, torch._foreach_add([point[i] for i in moving],
                                                   [direction[i].to(point[i].dtype) for i in moving],
                                                   alpha=step)):
            out[i] = t
        return out

    with torch.no_grad():
        if size == 0.0:
            return torch.zeros_like(losses(point) if at_point is None else at_point).double()
        eps = radius / size
        l_plus = losses(shifted(eps))
        if at_point is not None:
            return (l_plus.double() - at_point.double()) / eps
        l_minus = losses(shifted(-eps))
    return (l_plus.double() - l_minus.double()) / (2 * eps)


def directional_jvp(losses: Callable[[Vector], torch.Tensor], point: Vector,
                    direction: Vector) -> torch.Tensor:
    """⟨∇L_k(point), d⟩ for all k by one forward-mode JVP (torch.func.jvp).

    The tangent is d/‖d‖ (so half precision neither overflows nor underflows), the result
    scaled back by ‖d‖.
    """
    size = float(norm(direction))
    if size == 0.0:
        with torch.no_grad():
            return torch.zeros_like(losses(point)).double()
    tangents = tuple(torch.zeros_like(p) if d is None else (d / size).to(p.dtype)
                     for p, d in zip(point, direction))
    with torch.no_grad():
        _, out = torch.func.jvp(lambda *ps: losses(list(ps)), tuple(p.detach() for p in point),
                                tangents)
    return out.double() * size


# -- inverse Hessian-vector products -----------------------------------------------------------

def largest_eigenvalue(hvp: HVP, like: Vector, iterations: int, seed: int = 0) -> float:
    """|λ_max| of H by power iteration from a seeded random start (a lower bound on ‖H‖)."""
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t) for t in like]
    estimate = 0.0
    for _ in range(iterations):
        size = float(norm(v))
        if size == 0.0 or size != size:
            break
        v = [t / size for t in v]
        hv = hvp(v)
        estimate = float(norm(hv))
        v = hv
    return estimate


def neumann(hvp: HVP, v: Vector, iterations: int, alpha: float) -> Vector:
    """H⁻¹v ≈ α Σ_{i=0..n} (I − αH)^i v (Betty's form).

    The error is exactly H⁻¹(I − αH)^{n+1} v: relative error ≤ (1 − α·μ)^{n+1} for
    eigenvalues of H in [μ, 1/α]. Stops early (with a warning) if the terms grow, i.e.
    α ≥ 2/‖H‖ or H has negative curvature.
    """
    term, total = list(v), list(v)
    start = float(norm(v))
    for _ in range(iterations):
        hv = hvp(term)
        term = [t - alpha * h for t, h in zip(term, hv)]
        size = float(norm(term))
        if not size < 10 * start:  # diverging or NaN
            _warn_once(f"Neumann series diverges (alpha={alpha:.3g}: too large, or the Hessian has "
                       "negative curvature); truncating it. Lower reweight.neumann_alpha or use "
                       "reweight.hypergrad=fd.")
            break
        total = [s + t for s, t in zip(total, term)]
    return [alpha * s for s in total]


def conjugate_gradient(hvp: HVP, b: Vector, iterations: int, tol: float) -> Vector:
    """Solve Hx = b by conjugate gradients from x = 0.

    Guard: if H shows non-positive curvature along a search direction (pᵀHp ≤ 0) CG is
    stopped and the iterate so far is returned, or b itself (the identity inverse, as
    ``darts``) if there is none; failing to reach ``tol`` in ``iterations`` is reported.
    """
    x = [torch.zeros_like(t) for t in b]
    r, p = list(b), list(b)
    rr = dot(r, r)
    b_norm = float(rr.sqrt())
    if b_norm == 0.0:
        return x
    for i in range(iterations):
        hp = hvp(p)
        curvature = dot(p, hp)
        if not curvature > 0:
            _warn_once("CG met non-positive curvature (the Hessian is not positive definite here); "
                       "using the iterate so far (identity inverse on the first iteration). "
                       "Use reweight.hypergrad=fd for the exact one-step derivative.")
            return list(b) if i == 0 else x
        step = rr / curvature
        x = [xi + step.to(xi.dtype) * pi for xi, pi in zip(x, p)]
        r = [ri - step.to(ri.dtype) * hi for ri, hi in zip(r, hp)]
        rr_new = dot(r, r)
        if float(rr_new.sqrt()) <= tol * b_norm:
            return x
        p = [ri + (rr_new / rr).to(ri.dtype) * pi for ri, pi in zip(r, p)]
        rr = rr_new
    _warn_once(f"CG did not reach relative residual {tol} in {iterations} iterations "
               f"(now {float(rr.sqrt()) / b_norm:.2e}); raise reweight.iterations.")
    return x


# -- what the engine hands over ----------------------------------------------------------------

@dataclass
class InnerStep:
    """One level I + level II step, as the hypergradient needs it.

    ``losses(params, exact)`` is L(θ) ∈ R^K on this step's level I batches (their random
    draws replayed) with θ's parameters replaced by ``params`` (θ_b first), in float32
    (``exact``: without TF32);
    ``theta`` is θ before the level I step. The rates are those the steps used; the
    preconditioners (None: 1) are P of eq. (1) on θ_b and w_b. Unroll > 1 also needs w
    before the level II step, ``finetune_loss(params)`` = L_ft on its batch, and the SGD
    momenta and weight decays.
    """

    theta: Vector
    losses: Callable[[Vector, bool], torch.Tensor]
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


@dataclass
class Hypergradient:
    """∂L_val/∂λ ∈ R^K by ``fd``/``jvp`` (eq. 1, or reverse mode for unroll > 1) or
    ``neumann``/``cg`` (eq. 2). The engine resolves ``auto`` (fd; jvp under AMP or unroll > 1)."""

    method: str = "fd"
    scale: str = "reference"
    fd_radius: float = 0.01
    fd_scheme: str = "central"
    iterations: int = 5
    neumann_alpha: float = 0.0  # 0: 1/‖H‖ from power iteration
    curvature_iterations: int = 10
    cg_tol: float = 1e-4

    @property
    def needs_hessians(self) -> bool:
        return self.method in ("neumann", "cg")

    def __call__(self, problem: Problem, hvps: Callable[[int], tuple[HVP, HVP]] | None = None) -> torch.Tensor:
        """``hvps(t)`` gives (H_pt at θ_{t-1}, H_ft at w_{t-1}) of inner step t (unroll > 1)."""
        if self.needs_hessians:
            return self._implicit(problem)
        last = problem.steps[-1]
        if len(problem.steps) == 1:
            g = one_step(problem, self._directional)
        else:
            g = unrolled(problem, self._directional, hvps)
        if self.scale == "reference":
            g = g / (last.eta_pretrain * last.eta_finetune)
        return g

    def _directional(self, step: InnerStep, direction: Vector) -> torch.Tensor:
        if self.method == "jvp":
            return directional_jvp(lambda ps: step.losses(ps, False), step.theta, direction)
        at_point = step.losses_at_theta if self.fd_scheme == "forward" else None
        return directional_fd(lambda ps: step.losses(ps, True), step.theta, direction, self.fd_radius,
                              at_point)

    def _implicit(self, problem: Problem) -> torch.Tensor:
        nb = problem.n_backbone
        v = self._inverse(problem.hvp_finetune, problem.u, "H_ft")
        g_theta = [2 * problem.gamma * t for t in v[:nb]]
        g_theta += [torch.zeros_like(p) for p in problem.theta_after[nb:]]
        z = self._inverse(problem.hvp_pretrain, g_theta, "H_pt")
        last = problem.steps[-1]
        return -directional_fd(lambda ps: last.losses(ps, True), problem.theta_after, z, self.fd_radius)

    def _inverse(self, hvp: HVP, v: Vector, name: str) -> Vector:
        if self.method == "cg":
            return conjugate_gradient(hvp, v, self.iterations, self.cg_tol)
        alpha = self.neumann_alpha
        if alpha <= 0:
            top = largest_eigenvalue(hvp, v, self.curvature_iterations)
            alpha = 1.0 / top if top > 0 else 1.0
        x = neumann(hvp, v, self.iterations, alpha)
        residual = float(norm([a - b for a, b in zip(hvp(x), v)]) / max(float(norm(v)), 1e-30))
        if residual > 0.5:
            _warn_once(f"Neumann series for {name}⁻¹ far from converged (relative residual "
                       f"{residual:.2f} after {self.iterations} terms, alpha={alpha:.3g}); raise "
                       "reweight.iterations, or use reweight.hypergrad=cg or fd.")
        return x


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
