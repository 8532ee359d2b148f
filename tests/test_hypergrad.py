"""Every hypergradient method against the closed-form answer of a quadratic three-level problem.

Error bounds:
- ``fd``: a central difference is exact on quadratics, so only rounding remains: rel. 1e-7.
- ``jvp``: forward-mode AD is exact: rel. 1e-9.
- ``cg``: exact in dim(H) iterations on an SPD H: rel. 1e-7 with that many iterations.
- ``neumann``: relative error of each inverse ≤ (1 − μ/L)^(n+1) with α = 1/L; the test picks
  n so that bound is 1e-8 and allows rel. 1e-5 for the two nested inverses.
"""

import math

import pytest
import torch

from bench.problems.quadratic import Problem
from tapweight.method.hypergrad import softmax_vjp
from tapweight.method.inverse import conjugate_gradient, neumann


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture
def problem():
    return Problem()


LAM0 = [0.5, 0.3, 0.2]


@pytest.mark.parametrize("method,tol", [("fd", 1e-7), ("jvp", 1e-9)])
def test_one_step_matches_unrolled_autograd(problem, method, tol):
    cfg = problem.config(hypergrad=method, scale="exact")
    engine = problem.engine(cfg, LAM0)
    alpha0 = engine.alpha.detach().clone().double()
    theta0 = engine.theta.backbone.theta.detach().clone()
    heads0 = torch.stack([o.h.detach().clone() for o in engine.theta.objectives])
    w0 = engine.w.backbone.theta.detach().clone()
    engine.step()
    expected = problem.unrolled_alpha_grad(alpha0, theta0, heads0, w0, 0.05, 0.1, 0.3)
    assert rel_err(engine.alpha.grad.double(), expected) < max(tol, 1e-6)  # α is stored in float32


def test_reference_scale_drops_learning_rates(problem):
    """``reference`` = Betty darts: the exact unroll-1 gradient divided by η₁η₂."""
    grads = {}
    for scale in ("exact", "reference"):
        engine = problem.engine(problem.config(hypergrad="jvp", scale=scale), LAM0)
        engine.step()
        grads[scale] = engine.alpha.grad.double()
    assert rel_err(grads["reference"] * 0.05 * 0.1, grads["exact"]) < 1e-6


def _at_optimum(problem, method, **kwargs):
    """An engine whose θ and w sit at their optima and do not move (η₁ = η₂ = 0)."""
    gamma = 0.3
    lam = torch.tensor(LAM0, dtype=torch.float64)
    theta, heads = problem.optimum(lam)
    cfg = problem.config(hypergrad=method, **kwargs)
    cfg.pretrain.lr = cfg.finetune.lr = 0.0
    engine = problem.engine(cfg, LAM0, theta=theta, h=heads, w=problem.w_star(theta, gamma))
    alpha0 = engine.alpha.detach().clone().double()
    engine.step()
    return engine.alpha.grad.double(), problem.implicit_alpha_grad(alpha0, gamma)


def test_cg_matches_implicit_closed_form(problem):
    dim = problem.n + problem.k
    got, expected = _at_optimum(problem, "cg", iterations=dim, cg_tol=1e-12)
    assert rel_err(got, expected) < 1e-6


def test_neumann_matches_implicit_closed_form(problem):
    mu, big_l = problem.hessian_bounds(torch.tensor(LAM0, dtype=torch.float64), 0.3)
    terms = math.ceil(math.log(1e-8) / math.log(1 - mu / big_l))
    got, expected = _at_optimum(problem, "neumann", iterations=terms, neumann_alpha=1 / big_l)
    assert rel_err(got, expected) < 1e-5


def test_neumann_error_bound_and_divergence_guard():
    h = torch.diag(torch.tensor([1.0, 4.0]))
    hvp = lambda v: [h @ v[0]]  # noqa: E731
    v = [torch.tensor([1.0, 1.0])]
    exact = torch.linalg.solve(h, v[0])
    for n in (0, 3, 10):
        approx = neumann(hvp, v, n, alpha=0.25)[0]
        bound = (1 - 0.25 * 1.0) ** (n + 1) * exact.norm()
        assert (approx - exact).norm() <= bound + 1e-12
    blown = neumann(hvp, v, 50, alpha=1.0)[0]  # α·λ_max = 4 > 2: the series diverges
    assert torch.isfinite(blown).all()


def test_cg_guard_on_indefinite_hessian():
    h = torch.diag(torch.tensor([1.0, -1.0]))
    b = [torch.tensor([1.0, 1.0])]
    x = conjugate_gradient(lambda v: [h @ v[0]], b, 10, 1e-10)[0]
    assert torch.isfinite(x).all()
    assert torch.equal(x, b[0])  # zero curvature on the first direction: identity fallback


def test_softmax_vjp_matches_autograd():
    alpha = torch.randn(4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch.softmax(alpha, 0), alpha, g)
    assert torch.allclose(softmax_vjp(torch.softmax(alpha, 0).detach(), g), expected)
