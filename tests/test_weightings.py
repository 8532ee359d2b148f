"""Weighting methods: each rule's step against the same step computed by hand in NumPy, and
what the engine hands them (per-objective gradients, cosines) against autograd."""

import copy
import itertools
import json

import numpy as np
import pytest
import torch

from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.method import weightings
from tapweight.method.engine import Engine
from tapweight.method.metrics import task_loss
from tapweight.method.models import PretrainModel, TaskModel, frozen_running_stats
from tapweight.method.weightings import AlphaOptimizer, Signal
from tapweight.method.weightings.cosine import Cosine, Gating
from tapweight.method.weightings.doge import DoGE
from tapweight.method.weightings.gradnorm import GradNorm
from tapweight.method.weightings.static import Fixed, Single
from tapweight.method.weightings.tapweight import OLAux, TapWeight, TapWeightNormalized
from tapweight.plugin.manager import build_registry
from tests import toy_plugin

ALPHA0 = np.log([0.5, 0.3, 0.2])


def cfg_for(method: str, **options) -> RunConfig:
    return RunConfig(method=method, weighting={method.split(":")[0]: options} if options else {})


def softmax(a):
    e = np.exp(a - a.max())
    return e / e.sum()


class Level3:
    """α as a parameter with level III's optimizer (SGD, ``lr``) and a constant scheduler."""

    def __init__(self, alpha=ALPHA0, lr=2.0):
        self.alpha = torch.nn.Parameter(torch.tensor(alpha, dtype=torch.float32))
        self.opt = torch.optim.SGD([self.alpha], lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: 0.5 ** step)

    def signal(self, step=0, **fields):
        lam = torch.softmax(self.alpha.detach().double(), 0)
        fields = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v for k, v in fields.items()}
        return Signal(step=step, lam=lam, losses=fields.pop("losses", torch.ones(3, dtype=torch.float64)),
                      alpha=self.alpha.detach().double(), reweight=AlphaOptimizer(self.alpha, self.opt, self.sched),
                      **fields)

    def step(self, rule, **fields):
        """The rule's update, its logits copied into α as the engine does."""
        alpha = rule.update(self.signal(**fields))
        with torch.no_grad():
            self.alpha.copy_(alpha.to(self.alpha))
        return self.alpha.detach().double().numpy()


def vjp(alpha, g):
    """∂L/∂α = λ ⊙ (g − ⟨λ, g⟩) for λ = softmax(α)."""
    lam = softmax(alpha)
    return lam * (g - lam @ g)


def test_tapweight_steps_alpha_with_level_threes_optimizer_and_schedule():
    level, g1, g2 = Level3(lr=2.0), np.array([0.3, -0.1, 0.2]), np.array([-0.4, 0.5, 0.1])
    rule = TapWeight(cfg_for("tapweight"))
    a1 = ALPHA0 - 2.0 * vjp(ALPHA0, g1)
    assert np.allclose(level.step(rule, hypergrad=g1.tolist()), a1, atol=1e-6)
    a2 = a1 - 1.0 * vjp(a1, g2)  # the scheduler halved the rate
    assert np.allclose(level.step(rule, hypergrad=g2.tolist()), a2, atol=1e-6)


def test_tapweight_normalized_divides_by_the_running_rms():
    level, g1, g2 = Level3(), np.array([0.3, -0.1, 0.2]), np.array([-0.04, 0.05, 0.01])
    rule = TapWeightNormalized(cfg_for("tapweight-normalized", lr=0.5, beta=0.9))
    v1 = 0.1 * np.mean(g1 ** 2)
    a1 = ALPHA0 - 0.5 * vjp(ALPHA0, g1 / np.sqrt(v1 / (1 - 0.9)))
    assert np.allclose(level.step(rule, hypergrad=g1.tolist()), a1, atol=1e-6)
    v2 = 0.9 * v1 + 0.1 * np.mean(g2 ** 2)
    a2 = a1 - 0.5 * vjp(a1, g2 / np.sqrt(v2 / (1 - 0.81)))
    assert np.allclose(level.step(rule, hypergrad=g2.tolist()), a2, atol=1e-6)
    assert level.opt.state_dict()["state"] == {}  # not level III's optimizer


def test_olaux_steps_once_per_horizon_with_the_sum():
    level, g1, g2 = Level3(lr=2.0), np.array([0.3, -0.1, 0.2]), np.array([-0.4, 0.5, 0.1])
    rule = OLAux(cfg_for("olaux", horizon=2))
    assert np.allclose(level.step(rule, hypergrad=g1.tolist()), ALPHA0, atol=1e-6)  # step 1: accumulated only
    a2 = ALPHA0 - 1.0 * vjp(ALPHA0, g1 + g2)  # the scheduler stepped every global step: rate 2 · 0.5
    assert np.allclose(level.step(rule, hypergrad=g2.tolist()), a2, atol=1e-6)
    assert rule.state_dict() == {"total": None, "count": 0}


def cosine_fields(dots, norms, u_norm):
    return {"dots": dots, "grad_norms": norms, "u_norm": u_norm}


def test_cosine_adds_lr_times_the_cosine_to_the_logits():
    level = Level3()
    dots, norms, u = np.array([2.0, -1.0, 0.5]), np.array([4.0, 2.0, 1.0]), 5.0
    rule = Cosine(cfg_for("cosine", lr=0.3))
    expected = ALPHA0 + 0.3 * dots / (norms * u)
    assert np.allclose(level.step(rule, **cosine_fields(dots.tolist(), norms.tolist(), u)), expected, atol=1e-6)


def test_gating_switches_off_the_objectives_whose_cosine_is_not_positive():
    level = Level3()
    rule = Gating(cfg_for("gating"))
    lam = softmax(level.step(rule, **cosine_fields([0.2, -0.1, 0.0], [1.0, 1.0, 1.0], 1.0)))
    assert np.allclose(lam, [1, 0, 0], atol=1e-9)
    weighted = Gating(cfg_for("gating", weighted=True))
    lam = softmax(level.step(weighted, **cosine_fields([0.2, 0.1, -0.3], [1.0, 1.0, 1.0], 1.0)))
    assert np.allclose(lam, [2 / 3, 1 / 3, 0], atol=1e-6)
    before = level.alpha.detach().clone()
    level.step(rule, **cosine_fields([-0.2, -0.1, 0.0], [1.0, 1.0, 1.0], 1.0))  # none positive: λ stays
    assert torch.equal(level.alpha.detach(), before)


def test_doge_takes_clipped_exponentiated_gradient_steps():
    level, eta, mu = Level3(alpha=np.zeros(3)), 0.1, 0.05
    rule = DoGE(cfg_for("doge", mu=mu, score_max=0.5, smoothing=0.1))
    lam = np.full(3, 1 / 3)
    for dots, norms in (([3.0, -1.0, 0.2], [2.0, 1.0, 3.0]), ([30.0, 1.0, 0.0], [1.0, 1.0, 1.0])):
        score = np.clip(eta * np.array(dots) / (np.mean(norms) + 1e-6), 0.0, eta * 0.5)
        lam = softmax(np.log(lam) + score / mu)
        lam = 0.9 * lam + 0.1 / 3
        got = softmax(level.step(rule, eta_pretrain=eta, **cosine_fields(dots, norms, 1.0)))
        assert np.allclose(got, lam, atol=1e-6)
    assert np.allclose(rule.state_dict()["lam"].numpy(), lam)  # kept in float64


def test_gradnorm_balances_norms_by_training_rate():
    level, a, lr = Level3(alpha=np.zeros(3)), 1.5, 0.1
    rule = GradNorm(cfg_for("gradnorm", asymmetry=a, lr=lr))
    w, first = np.ones(3), None
    for losses, norms in (([2.0, 1.0, 4.0], [1.0, 3.0, 0.5]), ([1.0, 0.9, 3.0], [2.0, 1.0, 1.0])):
        losses, norms = np.array(losses), np.array(norms)
        first = losses if first is None else first
        rate = losses / first
        g = w * norms
        target = g.mean() * (rate / rate.mean()) ** a
        w = np.maximum(w - lr * np.sign(g - target) * norms, 0)
        w = 3 * w / w.sum()
        got = softmax(level.step(rule, losses=losses.tolist(), grad_norms=norms.tolist()))
        assert np.allclose(got, w / 3, atol=1e-6)


def test_static_methods_and_their_checks():
    assert Fixed(RunConfig(method="fixed", weights=[1.0, 3.0])).initial(["a", "b"]) == [1.0, 3.0]
    with pytest.raises(TapweightError, match="one weight per objective"):
        Fixed(RunConfig(method="fixed", weights=[1.0])).initial(["a", "b"])
    with pytest.raises(TapweightError, match="needs weights"):
        Fixed(RunConfig(method="fixed"))
    assert Single(RunConfig(method="single:x.y"), "x.y").objectives(["a", "b"]) == ["x.y"]


@pytest.mark.parametrize("method, options, message", [
    ("cosine", {"rate": 1}, "no option weighting.cosine.rate (its options: lr)"),
    ("cosine", {"lr": "fast"}, "weighting.cosine.lr takes a float"),
    ("olaux", {"horizon": 0.5}, "weighting.olaux.horizon takes a int"),
    ("olaux", {"horizon": 0}, "horizon >= 1"),
    ("doge", {"mu": 0}, "mu > 0"),
    ("tapweight:x", {}, "takes no argument"),
])
def test_bad_options_are_one_line_errors(method, options, message):
    with pytest.raises(TapweightError, match=message.replace("(", r"\(").replace(")", r"\)")):
        weightings.build(build_registry(), cfg_for(method, **options))


def test_options_of_an_unknown_method_are_refused():
    with pytest.raises(TapweightError, match="unknown method 'cosin'"):
        weightings.build(build_registry(), RunConfig(method="cosine", weighting={"cosin": {"lr": 1}}))


def test_every_builtin_declares_what_it_reads():
    registry = build_registry()
    declared = {}
    for name in ("none", "uniform", "tapweight", "tapweight-normalized", "olaux", "cosine", "gating", "doge",
                 "gradnorm"):
        w = weightings.build(registry, RunConfig(method=name))
        declared[name] = (w.pretrains, w.learns, w.hypergradient, w.gradients)
    assert declared == {
        "none": (False, False, False, None), "uniform": (True, False, False, None),
        "tapweight": (True, True, True, None), "tapweight-normalized": (True, True, True, None),
        "olaux": (True, True, True, None), "cosine": (True, True, False, "backbone"),
        "gating": (True, True, False, "backbone"), "doge": (True, True, False, "backbone"),
        "gradnorm": (True, False, False, "last")}


# -- what the engine hands the rules -----------------------------------------------------------

def fixed_engine(method: str, accumulate: int = 1):
    """The toy engine on one fixed corpus batch and one fixed validation batch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 8, generator=g), (torch.rand(32, 1, generator=g) > 0.5).float()
    backbone = toy_plugin.Backbone(8, 16)
    objectives = [toy_plugin.Denoise(backbone, 0.0), toy_plugin.Spread(), toy_plugin.Center()]
    theta = PretrainModel(backbone, objectives, ["toy.denoise", "toy.spread", "toy.center"])
    w = TaskModel(copy.deepcopy(backbone), torch.nn.Linear(16, 1))
    cfg = RunConfig(method=method, steps=4)
    cfg.pretrain.accumulate = accumulate
    rule = weightings.build(build_registry(), cfg)
    corpus, pairs = itertools.repeat(x[:16]), itertools.repeat((x[16:], y[16:]))
    engine = Engine(theta, w, corpus, pairs if rule.learns else None, pairs if rule.learns else None, cfg, "bce",
                    torch.device("cpu"), weighting=rule)
    return engine, x[:16], (x[16:], y[16:])


def objective_grads(theta, batch, params):
    """∇L_k on ``params`` of a copy of θ, one backward per objective (the answer to check against)."""
    theta = copy.deepcopy(theta).train()
    names = dict(theta.named_parameters())
    chosen = [names[n] for n in params]
    losses = theta(batch)
    return [torch.autograd.grad(loss, chosen, retain_graph=True) for loss in losses]


def flat(grads):
    return torch.cat([g.reshape(-1).double() for g in grads])


@pytest.mark.parametrize("accumulate", [1, 2])
def test_cosine_engine_hands_the_true_gradients_and_cosines(accumulate):
    engine, batch, (xv, yv) = fixed_engine("cosine", accumulate)
    backbone = [n for n in engine.theta_names if n.startswith("backbone.")]
    expected = [flat(g) for g in objective_grads(engine.theta, batch, backbone)]  # θ before the step
    engine.hypergrad = None  # the cosine rule reads no hypergradient: calling it would fail
    record = engine.step()
    with frozen_running_stats(engine.w):
        u = torch.autograd.grad(task_loss("bce", engine.w(xv), yv), engine.w_backbone)
    u = flat(u)
    for name, g in zip(engine.names, expected):
        assert record[f"grad_norm_{name}"] == pytest.approx(float(g.norm()), rel=1e-5)
        assert record[f"cosine_{name}"] == pytest.approx(float(g @ u / (g.norm() * u.norm())), rel=1e-4, abs=1e-7)
    assert not any(k.startswith("hypergrad_") for k in record)
    cos = torch.tensor([record[f"cosine_{n}"] for n in engine.names], dtype=torch.float64)
    assert torch.allclose(engine.alpha.detach().double(), torch.log(torch.full((3,), 1 / 3)).double() + 0.01 * cos,
                          atol=1e-6)


def test_gradnorm_runs_level_I_alone_on_the_last_backbone_weight():
    engine, batch, _ = fixed_engine("gradnorm")
    assert engine.train is None and engine.val is None and not engine.learn_weights
    params = dict(engine.theta.named_parameters())
    last = [n for n in engine.theta_names if n.startswith("backbone.") and params[n].ndim >= 2][-1]
    expected = [float(flat(g).norm()) for g in objective_grads(engine.theta, batch, [last])]
    record = engine.step()
    assert [record[f"grad_norm_{n}"] for n in engine.names] == pytest.approx(expected, rel=1e-5)
    assert "val_loss" not in record and "cosine_denoise" not in record


def test_tapweight_computes_no_objective_gradients():
    engine, _, _ = fixed_engine("tapweight")
    assert engine.gradients is None
    record = engine.step()
    assert "hypergrad_denoise" in record and "grad_norm_denoise" not in record


def test_list_methods_shows_each_with_its_plugin_and_description(toy, capsys, monkeypatch):
    from tests.test_cli import cli

    monkeypatch.setenv("COLUMNS", "250")
    assert cli("list", "methods") == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("│")}
    core = {"none", "uniform", "fixed", "single:<objective>", "tapweight", "tapweight-normalized", "olaux",
            "cosine", "gating", "doge", "gradnorm"}
    assert core <= set(rows) and all(rows[m][0] == "core" and rows[m][1] for m in core)
    assert rows["toy-trend"][0] == "toy"
    assert cli("plugins") == 0
    report = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(report["core"]["provides"]["methods"]) == {m.split(":")[0] for m in core}
    assert report["toy"]["provides"]["methods"] == ["toy-trend"]


def test_compare_takes_every_kind_of_method_with_its_options(toy, tmp_path):
    """Static, hypergradient, cosine and task-agnostic rules side by side, each reading only
    its own options (weighting.<method>.<option>), and a plugin's rule among them."""
    import pandas as pd

    from tests.test_cli import cli

    out = tmp_path / "cmp"
    methods = ["uniform", "tapweight-normalized", "cosine", "gradnorm", "toy-trend"]
    assert cli("compare", "toy", "blobs", "--methods", ",".join(methods), "--seeds", "0,1", "--quiet",
               "--out", str(out), "--set", "weighting.cosine.lr=5", "--set", "weighting.gradnorm.lr=0.5") == 0
    table = pd.read_csv(out / "comparison.csv").set_index("method")
    assert list(table.index) == methods
    assert table.loc["uniform", "lambda_denoise"] == 0.5
    for m in methods[1:]:  # every rule moved λ
        assert abs(table.loc[m, "lambda_denoise"] - 0.5) > 1e-3, m
    cosines = pd.read_csv(out / "blobs-cosine" / "seed0" / "losses.csv")
    assert {"cosine_denoise", "grad_norm_spread"} <= set(cosines.columns)
    assert "val_loss" not in pd.read_csv(out / "blobs-gradnorm" / "seed0" / "losses.csv").columns
