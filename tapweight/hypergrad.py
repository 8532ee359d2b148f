"""The level III hypergradient ∂L_val/∂λ, and its methods behind one interface.

Unroll 1 with SGD steps θ' = θ − η₁ Σ_k λ_k ∇L_k(θ) and
w' = w − η₂ (∇L_ft(w) + 2γ (w_b − θ'_b)) gives, exactly (ARCHITECTURE.md §2):

    dL_val/dλ_k = − η₁ η₂ · 2γ · ⟨∇_θ L_k(θ), u_b⟩,   u = ∇_w L_val(w')            (1)

Level II's mixed derivative is the proximal term's, 2γ·I, in closed form, and the K dot
products in (1) are one directional derivative of the loss vector L(θ) ∈ R^K along u_b:
a central difference of two no-grad forwards (``fd``) or one forward-mode JVP (``jvp``).

Scale convention. The reference code's Betty ``darts`` update drops the learning-rate
factors, i.e. it returns (1) divided by η₁η₂; the paper's α learning rate of 200 (with
SGD, γ = 1e-3) is tuned for that. ``scale="reference"`` (default) reproduces it;
``scale="exact"`` keeps η₁η₂ and is the true derivative of L_val(w'(θ'(λ))) for plain SGD.

The implicit (IFT) methods replace the identity inverse Hessians of ``darts`` by
approximations of the real ones, as Betty's ``neumann`` and ``cg`` do:

    v = H_ft⁻¹ u,   z = H_pt⁻¹ [2γ v_b ; 0],   dL_val/dλ_k = −⟨∇_θ L_k(θ), z⟩           (2)

with H_ft = ∇²_w (L_ft + γ‖w_b − θ_b‖²), H_pt = ∇²_θ Σ λ_k L_k, applied through
double-backward Hessian-vector products. (2) is the exact derivative of L_val(w*(θ*(λ)))
when θ and w are at their optima; both forms agree with ``darts`` when H⁻¹ ≈ I.
Chain rule to α = softmax⁻¹(λ): ∂/∂α = λ ⊙ (g − ⟨λ, g⟩).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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


def softmax_vjp(lam: torch.Tensor, g_lam: torch.Tensor) -> torch.Tensor:
    """∂L/∂α from ∂L/∂λ for λ = softmax(α): Jᵀg with J = diag(λ) − λλᵀ."""
    return lam * (g_lam - (lam * g_lam).sum())


# -- directional derivatives of the loss vector L(θ) ∈ R^K ---------------------------------------

def directional_fd(losses: Callable[[Vector], torch.Tensor], point: Vector, direction: Vector,
                   radius: float) -> torch.Tensor:
    """⟨∇L_k(point), d⟩ for all k by a central difference: two no-grad forwards.

    The step is ε = radius / ‖d‖, so the perturbation has norm ``radius`` (Betty's darts).
    Exact for quadratic L; O(ε²) error otherwise.
    """
    size = float(norm(direction))
    moving = [i for i, d in enumerate(direction) if d is not None]

    def shifted(step: float) -> Vector:  # point + step·d, one fused add; untouched tensors shared
        out = list(point)
        for i, t in zip(moving, torch._foreach_add([point[i] for i in moving],
                                                   [direction[i] for i in moving], alpha=step)):
            out[i] = t
        return out

    with torch.no_grad():
        if size == 0.0:
            return torch.zeros_like(losses(point))
        eps = radius / size
        l_plus = losses(shifted(eps))
        l_minus = losses(shifted(-eps))
    return (l_plus.double() - l_minus.double()) / (2 * eps)


def directional_jvp(losses: Callable[[Vector], torch.Tensor], point: Vector,
                    direction: Vector) -> torch.Tensor:
    """⟨∇L_k(point), d⟩ for all k by one forward-mode JVP (torch.func.jvp)."""
    tangents = tuple(torch.zeros_like(p) if d is None else d.to(p.dtype)
                     for p, d in zip(point, direction))
    with torch.no_grad():
        _, out = torch.func.jvp(lambda *ps: losses(list(ps)), tuple(p.detach() for p in point),
                                tangents)
    return out.double()


# -- inverse Hessian-vector products -----------------------------------------------------------

def neumann(hvp: HVP, v: Vector, iterations: int, alpha: float) -> Vector:
    """H⁻¹v ≈ α Σ_{i=0..n} (I − αH)^i v (Betty's form).

    The error is exactly H⁻¹(I − αH)^{n+1} v: relative error ≤ (1 − α·μ)^{n+1} for
    eigenvalues of H in [μ, 1/α]. Stops early (with a warning) if the terms grow, i.e.
    α ≥ 2/‖H‖.
    """
    term, total = list(v), list(v)
    start = float(norm(v))
    for _ in range(iterations):
        hv = hvp(term)
        term = [t - alpha * h for t, h in zip(term, hv)]
        size = float(norm(term))
        if not size < 10 * start:  # diverging or NaN: α is too large for this Hessian
            _warn_once(f"Neumann series diverges (alpha={alpha} too large); truncating it. "
                       "Lower reweight.neumann_alpha.")
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
            _warn_once("CG met non-positive curvature; using the iterate so far "
                       "(identity inverse on the first iteration).")
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


# -- the methods -------------------------------------------------------------------------------

@dataclass
class Problem:
    """What one global step hands to a hypergradient method.

    ``losses(params)`` evaluates L(θ) ∈ R^K with θ's parameters replaced by ``params``
    (the first ``n_backbone`` are θ_b), on the step's pretraining batches with their
    random draws replayed. ``theta_before``/``theta_after`` are θ before and after the
    level I step; ``u`` is ∇_w L_val(w') over all of w's parameters (w_b first).
    """

    losses: Callable[[Vector], torch.Tensor]
    theta_before: Vector
    theta_after: Vector
    n_backbone: int
    u: Vector
    gamma: float
    eta_pretrain: float
    eta_finetune: float
    hvp_finetune: HVP | None = None
    hvp_pretrain: HVP | None = None


@dataclass
class Hypergradient:
    """∂L_val/∂λ ∈ R^K by one of ``fd``, ``jvp`` (one-step, eq. 1), ``neumann``, ``cg`` (eq. 2)."""

    method: str = "fd"
    scale: str = "reference"
    fd_radius: float = 0.01
    iterations: int = 5
    neumann_alpha: float = 0.01
    cg_tol: float = 1e-4

    @property
    def needs_hessians(self) -> bool:
        return self.method in ("neumann", "cg")

    def __call__(self, problem: Problem) -> torch.Tensor:
        nb = problem.n_backbone
        if self.needs_hessians:
            v = self._inverse(problem.hvp_finetune, problem.u)
            g_theta = [2 * problem.gamma * t for t in v[:nb]]
            g_theta += [torch.zeros_like(p) for p in problem.theta_after[nb:]]
            z = self._inverse(problem.hvp_pretrain, g_theta)
            return -self._directional(problem.losses, problem.theta_after, z)
        # eq. (1) is linear in the direction: take it along u_b and scale by 2γ after
        direction = list(problem.u[:nb]) + [None] * (len(problem.theta_before) - nb)
        g = -2 * problem.gamma * self._directional(problem.losses, problem.theta_before, direction)
        if self.scale == "exact":
            g = g * (problem.eta_pretrain * problem.eta_finetune)
        return g

    def _directional(self, losses, point: Vector, direction: Vector) -> torch.Tensor:
        if self.method == "jvp":
            return directional_jvp(losses, point, direction)
        return directional_fd(losses, point, direction, self.fd_radius)

    def _inverse(self, hvp: HVP, v: Vector) -> Vector:
        if self.method == "neumann":
            return neumann(hvp, v, self.iterations, self.neumann_alpha)
        return conjugate_gradient(hvp, v, self.iterations, self.cg_tol)


def hessian_vector_product(loss_fn: Callable[[], torch.Tensor], params: Vector,
                           extra: Callable[[Vector], Vector] | None = None) -> HVP:
    """An HVP closure for ∇²loss at ``params``: one forward and backward with a graph,
    then one double-backward per product. ``extra(v)`` adds a closed-form term (2γv_b)."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)

    def hvp(v: Vector) -> Vector:
        hv = torch.autograd.grad(grads, params, grad_outputs=[t.detach() for t in v],
                                 retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv)]
        if extra is not None:
            hv = [h + e for h, e in zip(hv, extra(v))]
        return hv

    return hvp
