"""The hypergradient in every setting the config accepts, against autograd through the unrolled
optimizer steps in float64 (bench/problems/unrolled.py): SGD with momentum and weight decay, Adam,
AdamW, learning-rate schedules, unroll > 1, bf16 autocast, a step skipped by fp16's GradScaler.

Tolerances (relative error of ∂L_val/∂α): ``jvp`` is exact up to rounding (1e-6, α is
stored in float32); ``fd`` carries the O(ε²) error of a central difference (1e-4 at the
default radius 0.001; measured ≤ 3.2e-5 by ``python -m bench exactness``). Every
registered estimator under SGD, Adam and AdamW: tests/test_hypergrad_estimators.py.
"""


import pytest
import torch

from bench.problems import unrolled
from tapweight.errors import TapweightError
from tapweight.job.runner import resolve
from tapweight.method.engine import Engine
from tapweight.method.optim import build_optimizer

TOL = {"fd": 1e-4, "jvp": 1e-6}


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), 0))


check = unrolled.hypergradients


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_differentiable_updates_match_torch(optimizer):
    """The reference's optimizer functions take torch.optim's steps, over several steps."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    level = unrolled.config(optimizer).pretrain
    opt = build_optimizer([p], level)
    mine, state = p.detach().clone(), {}
    for _ in range(4):
        g = torch.randn(5, dtype=torch.float64)
        g[0] = 0.0  # an entry without gradient
        group = opt.param_groups[0]
        mine, state = unrolled.update(opt)(mine, g, state, group, group["lr"])
        p.grad = g.clone()
        opt.step()
        assert torch.allclose(mine, p.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scheduler", ["step", "warmup", "cosine"])
def test_exact_scale_uses_the_rates_the_steps_used(scheduler):
    """During warm-up and at every step-decay boundary the rate changes between the step and
    level III; the hypergradient uses the rate the optimizer used."""
    cfg = unrolled.config("sgd", hypergrad="jvp")
    for level in (cfg.pretrain, cfg.finetune):
        level.scheduler, level.step_size, level.decay, level.warmup_steps = scheduler, 2, 0.5, 4
    for warmup in (1, 3):  # inside the warm-up, and across a step-decay boundary
        got, expected = check(cfg, warmup)
        assert rel_err(got, expected) < TOL["jvp"]


def test_reference_scale_is_exact_over_the_rates_used():
    cfg = unrolled.config("adam", hypergrad="jvp")
    cfg.pretrain.scheduler = "step"
    cfg.pretrain.step_size = 1
    cfg.reweight.scale = "reference"
    engine = unrolled.engine(cfg)
    engine.step()
    exact = unrolled.alpha_grad(unrolled.snapshot(engine))
    eta = engine.state.opt_pretrain.param_groups[0]["lr"] * engine.state.opt_finetune.param_groups[0]["lr"]
    engine.step()
    assert rel_err(engine.alpha.grad * eta, exact) < 1e-6


@pytest.mark.parametrize("method", ["fd", "jvp"])
@pytest.mark.parametrize("unroll", [2, 5])
def test_unroll_is_differentiated_through_every_inner_step(unroll, method):
    cfg = unrolled.config("sgd", hypergrad=method, unroll=unroll)
    cfg.pretrain.accumulate = 2
    cfg.pretrain.batch_size = 8
    got, expected = check(cfg, warmup=1)
    assert rel_err(got, expected) < TOL[method], (got, expected)


def test_truncating_unroll_would_be_wrong():
    """The check can fail: the last inner step's derivative alone is not the answer."""
    cfg = unrolled.config("sgd", hypergrad="jvp", unroll=5)
    engine = unrolled.engine(cfg)
    engine.step()
    expected = unrolled.alpha_grad(unrolled.snapshot(engine))
    steps = []
    original = engine.reweight_step

    def last_only(inner):
        steps.extend(inner[:-1])
        return original(inner[-1:])

    engine.reweight_step = last_only
    engine.step()
    assert len(steps) == 4 and cosine(engine.alpha.grad, expected) < 0.99


def test_unroll_with_adam_is_refused(toy):
    with pytest.raises(TapweightError, match="unroll=2 .* SGD steps only"):
        resolve("toy", "blobs", "cpu", sets=["reweight.unroll=2", "pretrain.optimizer=adam"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["auto", "fd"])
def test_bf16_autocast_agrees_with_the_float32_answer(method, optimizer):
    """Under bf16 autocast the default (see test_hypergrad_estimators.py for which estimator
    ``auto`` picks) and an explicit fd run their forwards in float32: both agree with the
    exact float32 derivative of the same step. (The reference is float32 too: float64 tensors
    draw other dropout masks and noise.)"""
    cfg = unrolled.config(optimizer, hypergrad=method)
    cfg.amp = "bf16"
    got, expected = check(cfg, warmup=2, dtype=torch.float32)
    assert cosine(got, expected) >= 0.999


def test_a_step_skipped_by_the_grad_scaler_skips_level_three():
    cfg = unrolled.config("sgd")
    cfg.amp = "fp16"
    engine = unrolled.engine(cfg, torch.float32)
    engine.state.scaler_pretrain = torch.amp.GradScaler("cpu", init_scale=2.0 ** 60)  # overflows in fp16
    alpha = engine.alpha.detach().clone()
    record = engine.step()
    assert torch.equal(engine.alpha.detach(), alpha)
    assert all(record[f"hypergrad_{n}"] == 0.0 for n in engine.names)
    engine.state.scaler_pretrain.update(2.0 ** 8)  # a scale that fits: the next step is taken, λ moves
    record = engine.step()
    assert not torch.equal(engine.alpha.detach(), alpha)
    assert any(record[f"hypergrad_{n}"] != 0.0 for n in engine.names)


def test_neumann_defaults_converge_on_a_quadratic_at_its_optimum():
    """Default α (1/‖H‖ by power iteration) and terms: the implicit hypergradient of the
    quadratic problem at its optimum."""
    from bench.problems.quadratic import Problem

    problem = Problem()
    lam = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    theta, heads = problem.optimum(lam)
    cfg = problem.config(hypergrad="neumann")
    cfg.pretrain.lr = cfg.finetune.lr = 0.0
    engine = problem.engine(cfg, [0.5, 0.3, 0.2], theta=theta, h=heads, w=problem.w_star(theta, 0.3))
    alpha0 = engine.alpha.detach().clone().double()
    engine.step()
    expected = problem.implicit_alpha_grad(alpha0, 0.3)
    assert rel_err(engine.alpha.grad, expected) < 0.1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_offset_free_val_loss_is_differentiated_exactly(optimizer):
    """``reweight.val_loss=offset_free``: ∂L_val/∂α against autograd through a Newton refit
    of the offsets (their dependence on w kept); the plain loss's gradient differs."""
    cfg = unrolled.config(optimizer, hypergrad="jvp", val_loss="offset_free")
    got, expected = check(cfg)
    assert rel_err(got, expected) < TOL["jvp"], (got, expected)
    cfg.reweight.val_loss = "plain"
    assert rel_err(got, check(cfg)[0]) > 0.05


def test_offset_free_val_loss_refuses_other_losses():
    cfg = unrolled.config("sgd", val_loss="offset_free")
    engine = unrolled.engine(cfg)
    with pytest.raises(TapweightError, match=r"offset_free refits the offset of binary labels: this task's loss is ce"):
        Engine(engine.theta, engine.w, engine.corpus, engine.train, engine.val, cfg, "ce", torch.device("cpu"))
    # fixed weights (uniform, none) never read L_val: nothing to refuse
    Engine(engine.theta, engine.w, engine.corpus, None, None, cfg, "", torch.device("cpu"), learn_weights=False)


def test_identity_preconditioner_takes_adam_steps_as_sgd_steps():
    """``reweight.preconditioner=identity`` (the reference code's convention): the one-step
    formula with P = 1, −2γη₁η₂⟨∇L_k(θ), u_b⟩, from the same u; under Adam that is not the
    exact derivative (the second check can fail)."""
    from tapweight.method.hypergrad import directional_jvp, softmax_vjp

    engine = unrolled.engine(unrolled.config("adam", hypergrad="jvp", preconditioner="identity"))
    for _ in range(3):
        engine.step()
    exact = unrolled.alpha_grad(unrolled.snapshot(engine))
    seen, method = {}, engine.hypergrad

    def record(problem, hvps=None):
        seen["problem"] = problem
        return method(problem, hvps)

    record.needs_hessians = False
    engine.hypergrad = record
    lam = engine.lam
    engine.step()
    problem = seen["problem"]
    (step,) = problem.steps
    nb = problem.n_backbone
    one, two = step.pretrain, step.finetune
    direction = list(problem.u[:nb]) + [None] * (len(one.theta) - nb)
    g = -2 * problem.gamma * one.eta * two.eta * directional_jvp(
        lambda ps: one.evaluate(ps, "float32"), one.theta, direction)
    assert one.precondition is None and two.precondition is None
    assert rel_err(engine.alpha.grad, softmax_vjp(lam, g)) < 1e-6
    assert rel_err(engine.alpha.grad, exact) > 0.1
