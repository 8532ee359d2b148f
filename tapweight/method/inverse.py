"""Inverse Hessian-vector products for the implicit estimators (``neumann``, ``cg``; eq. (2)
of hypergrad.py): a power iteration for ‖H‖, the Neumann series and conjugate gradients, each
warning once, with the remedy, when it has not converged."""

from __future__ import annotations

import logging

import torch

from tapweight.method.hypergrad import HVP, Vector, dot, norm

log = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


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
            warn_once(f"Neumann series diverges (alpha={alpha:.3g}: too large, or the Hessian has "
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
            warn_once("CG met non-positive curvature (the Hessian is not positive definite here); "
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
    warn_once(f"CG did not reach relative residual {tol} in {iterations} iterations "
              f"(now {float(rr.sqrt()) / b_norm:.2e}); raise reweight.iterations.")
    return x
