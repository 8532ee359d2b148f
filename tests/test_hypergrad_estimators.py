"""The estimator registry (tapweight/method/estimators.py): every registered directional
estimator against autograd through the unrolled steps (bench/problems/unrolled.py), what
``auto`` picks, and that a new estimator is one registered class.

Tolerances (relative error of ∂L_val/∂α, worst over SGD, Adam and AdamW): ``jvp`` is exact
up to rounding (1e-6); ``fd``, a central difference, carries O(ε²) (1e-4 at the default
radius 0.001, measured 4.2e-6); ``fd-forward``, a one-sided one, O(ε) (2e-2, measured 5.3e-3;
cosine ≥ 0.999). A new estimator needs an entry here.
"""

import dataclasses
import types

import pytest
import torch

from bench.problems import unrolled
from tapweight.errors import TapweightError
from tapweight.job.runner import resolve
from tapweight.method import estimators
from tapweight.plugin import manager as plugins
from tapweight.plugin.hookspecs import hookimpl
from tapweight.plugin.specs import EstimatorSpec

TOL = {"fd": 1e-4, "jvp": 1e-6, "fd-forward": 2e-2}
DIRECTIONAL = [name for name, cls in estimators.classes().items() if not cls.needs_hessians]


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), 0))


check = unrolled.hypergradients


def test_every_directional_estimator_has_a_tolerance():
    assert sorted(TOL) == sorted(DIRECTIONAL)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("method", DIRECTIONAL)
def test_every_directional_estimator_against_the_unrolled_reference(method, optimizer):
    got, expected = check(unrolled.config(optimizer, hypergrad=method))
    assert rel_err(got, expected) < TOL[method] and cosine(got, expected) > 0.999, (got, expected)


def test_the_one_sided_difference_is_first_order_in_the_radius():
    """Halving the radius halves fd-forward's error (O(ε)); the check can fail: a bug that
    reused the wrong losses would leave an error that does not shrink."""
    errors = []
    for radius in (0.04, 0.02):
        got, expected = check(unrolled.config("sgd", hypergrad="fd-forward", fd_radius=radius))
        errors.append(rel_err(got, expected))
    assert 1.6 < errors[0] / errors[1] < 2.4, errors


@pytest.mark.parametrize("amp", ["no", "bf16"])
def test_fd_forward_repeats_the_arithmetic_of_level_I(amp):
    """``level_one`` evaluates L(θ) as level I did, its autocast included, so that the one-sided
    difference subtracts losses rounded alike: at θ itself it gives level I's own values."""
    cfg = unrolled.config("sgd", hypergrad="fd-forward")
    cfg.amp = amp
    engine = unrolled.engine(cfg, torch.float32)
    one = engine.pretrain_step()
    (batch,) = one.batches
    again = engine.losses([batch], one.theta, "level_one")
    assert torch.allclose(again, one.local_losses, rtol=1e-6, atol=0)
    if amp != "no":  # the float32 evaluation differs by bf16's rounding: the difference would see it
        exact = engine.losses([batch], one.theta, "float32")
        assert (exact - again).abs().max() > 1e-4


@pytest.mark.parametrize("changes, chosen", [
    ({}, "fd-forward"),  # float32, unroll 1: the floor, one forward
    ({"reweight.hyper_fraction": 0.5}, "fd"),  # fd-forward needs level I's losses on the whole batch
    ({"reweight.unroll": 2}, "jvp"),  # T differences add up their errors
    ({"amp": "bf16"}, "fd"),  # a difference of bf16 losses is not measured to meet the criterion
])
def test_auto_is_the_cheapest_estimator_that_meets_the_criterion(changes, chosen):
    cfg = unrolled.config("sgd")
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    assert estimators.choose(cfg)[0] == chosen
    hypergrad = unrolled.engine(cfg).hypergrad
    assert hypergrad.method == chosen and hypergrad.reason.startswith("auto: the cheapest estimator")


def test_the_choice_says_why():
    """``auto``'s reason names the settings and each cheaper default-grade estimator it passed
    over, with its refusal; a named estimator is there because the config names it."""
    cfg = unrolled.config("sgd")
    cfg.reweight.hyper_fraction = 0.5
    name, reason = estimators.choose(cfg)
    assert name == "fd" and "hyper_fraction 0.5" in reason and "not fd-forward (reweight.hypergrad=fd-forward" in reason
    cfg.reweight.hypergrad = "jvp"
    assert estimators.choose(cfg) == ("jvp", "reweight.hypergrad=jvp")


def test_auto_on_cuda_with_tf32_is_the_central_difference():
    """Level I in float32 on CUDA runs its convolutions in TF32 (torch's default): 10 bits, too
    few for a one-sided difference against its losses; without TF32 fd-forward is fine again."""
    cfg, cuda = unrolled.config("sgd"), torch.device("cuda")
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert estimators.choose(cfg, cuda)[0] == "fd"
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        assert estimators.choose(cfg, cuda)[0] == "fd-forward"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.mark.parametrize("sets, message", [
    (["reweight.hypergrad=darts"], "reweight.hypergrad must be one of auto, fd, fd-forward, jvp, neumann, cg"),
    (["reweight.hypergrad=fd-forward", "reweight.hyper_fraction=0.5"], "fd-forward reuses level I's losses"),
    (["reweight.unroll=2", "pretrain.optimizer=adam"], "unroll=2 .* SGD steps only"),
])
def test_what_an_estimator_cannot_compute_is_a_one_line_error(toy, sets, message):
    with pytest.raises(TapweightError, match=message):
        resolve("toy", "blobs", "cpu", sets=sets)


def test_registering_a_name_twice_fails(toy):
    """A plugin's estimator named like the core's is refused, the plugin named; the core's stays."""
    taken = types.ModuleType("again")
    taken.register_estimators = hookimpl(lambda register: register(EstimatorSpec("fd", estimators.Estimator)))
    assert plugins.register_plugin(taken, "again")
    try:
        registry = plugins.build_registry()
        assert any(p.plugin == "again" and "estimator 'fd' is already registered by plugin 'core'" in p.message
                   for p in registry.problems)
        assert estimators.classes(registry)["fd"].__name__ == "CentralDifference"
    finally:
        plugins.pm.unregister(name="again")


def test_a_new_estimator_is_one_registered_class(toy):
    """A plugin's estimator (the toy plugin's ``toy-backward``): the config check, ``auto`` and
    the engine read the registry, so the new name is accepted, runs, and is not picked by
    ``auto`` (it does not claim to meet the criterion)."""
    job = resolve("toy", "blobs", "cpu", sets=["reweight.hypergrad=toy-backward"])
    assert job.cfg.reweight.hypergrad == "toy-backward"
    assert estimators.choose(dataclasses.replace(job.cfg, reweight=dataclasses.replace(
        job.cfg.reweight, hypergrad="auto")))[0] == "fd-forward"
    got, expected = check(unrolled.config("sgd", hypergrad="toy-backward"))
    assert rel_err(got, expected) < TOL["fd-forward"]
