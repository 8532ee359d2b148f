"""Engine mechanics: accumulation, fixed weights, batch-norm statistics, optimizers, schedules."""

import copy
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from tapweight.config import LevelConfig, RunConfig
from tapweight.method.batches import BatchStream
from tapweight.method.engine import Engine
from tapweight.method.levels import InnerStep
from tapweight.method.metrics import task_loss
from tapweight.method.models import PretrainModel, TaskModel, computed_once, frozen_running_stats, replay_rng
from tapweight.method.optim import build_optimizer, lr_factor, preconditioner
from tapweight.method.reads import HostReads, NonFiniteLoss
from tests import toy_plugin
from tests.host_reads import host_reads


def collate(items):
    return tuple(torch.stack(t) for t in zip(*items))


def make_engine(cfg, learn=True, weights=None, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), (torch.rand(64, 1, generator=g) > 0.5).float()
    backbone = toy_plugin.Backbone(8, 16)
    objectives = [toy_plugin.Denoise(backbone, 0.1), toy_plugin.Spread()]
    theta = PretrainModel(backbone, objectives, ["toy.denoise", "toy.spread"])
    w = TaskModel(copy.deepcopy(backbone), torch.nn.Linear(16, 1))
    corpus = BatchStream(TensorDataset(x), cfg.pretrain.batch_size, lambda it: torch.stack([i[0] for i in it]), 0)
    train = BatchStream(TensorDataset(x, y), 16, collate, 1)
    val = BatchStream(TensorDataset(x, y), 16, collate, 2)
    return Engine(theta, w, corpus, train, val, cfg, "bce", torch.device("cpu"), learn, weights)


def config(**pretrain):
    cfg = RunConfig(steps=4)
    for key, value in pretrain.items():
        setattr(cfg.pretrain, key, value)
    return cfg


def test_accumulation_equals_one_big_batch():
    """Two micro-batches of 16 give the same θ step as one batch of 32 (same examples), for
    an objective that is a mean over examples (denoise; spread is switched off)."""
    big = make_engine(config(batch_size=32, momentum=0.0), learn=False, weights=[1.0, 0.0])
    small = make_engine(config(batch_size=16, accumulate=2, momentum=0.0), learn=False,
                        weights=[1.0, 0.0])
    # the same 32 examples: the big stream's first batch is the small stream's first two
    small.corpus = BatchStream(big.corpus.dataset, 16, big.corpus.collate, 0)
    small.corpus._batches = lambda e: [b[i:i + 16] for b in BatchStream._batches(big.corpus, e) for i in (0, 16)]
    for p in (big, small):
        p.theta.objectives[0].noise = 0.0  # no random draw: the two runs draw differently
    for p in (big, small):  # batch norm makes a batch's loss depend on its size: take it out
        p.theta.backbone.net[1] = torch.nn.Identity()
    big.pretrain_step()
    small.pretrain_step()
    for a, b in zip(big.theta_params, small.theta_params):
        assert torch.allclose(a, b, atol=1e-6)


def test_fixed_weights_stay_fixed_and_levels_two_three_are_skipped():
    engine = make_engine(config(), learn=False, weights=[0.8, 0.2])
    w_before = [p.detach().clone() for p in engine.w.parameters()]
    for _ in range(3):
        record = engine.step()
    assert record["lambda_denoise"] == pytest.approx(0.8)
    assert "val_loss" not in record
    assert all(torch.equal(a, b) for a, b in zip(w_before, engine.w.parameters()))


def test_hypergradient_forwards_leave_running_stats_alone():
    engine = make_engine(config())
    one = engine.pretrain_step()
    two = engine.finetune_step()
    norms = [(m, m.running_mean.clone(), m.num_batches_tracked.clone())
             for model in (engine.theta, engine.w) for m in model.modules() if hasattr(m, "running_mean")]
    assert len(norms) == 2
    one.evaluate([p.detach() for p in engine.theta_params], True)
    engine.reweight_step([InnerStep(one, two)])  # w's validation forward, θ's for the hypergradient
    for m, mean, count in norms:
        assert torch.equal(m.running_mean, mean) and torch.equal(m.num_batches_tracked, count)


def test_random_objectives_are_replayed():
    """The hypergradient's forwards see the level I step's noise: L(θ_before) is reproduced."""
    engine = make_engine(config())
    engine.theta.backbone.net[1] = torch.nn.Identity()  # the loss depends on θ and the noise only
    step = engine.pretrain_step()
    assert torch.allclose(step.evaluate(step.theta, True), step.losses, atol=1e-6)


def test_non_finite_loss_names_step_and_objective():
    engine = make_engine(config())
    with torch.no_grad():
        engine.theta.objectives[0].decoder.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match=r"step 1 \(objective denoise = nan"):
        engine.step()


def test_param_groups_survive_and_adamw_is_adamw():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]},
              {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 0.5}]
    opt = build_optimizer(groups, LevelConfig(optimizer="adamw", lr=0.1, weight_decay=0.01))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]


@pytest.mark.parametrize("kind,expected", [
    ("step", [1, 1, 0.9, 0.9, 0.81]),
    ("warmup", [0.5, 1, 1, 1, 1]),
    ("cosine", [0.5, 1, 1, 0.5, 0.0]),
    ("constant", [1, 1, 1, 1, 1]),
])
def test_schedules(kind, expected):
    cfg = LevelConfig(scheduler=kind, step_size=2, decay=0.9, warmup_steps=0 if kind in ("step", "constant") else 2)
    factor = lr_factor(cfg, total_steps=4)
    assert [round(factor(s), 6) for s in range(5)] == pytest.approx(expected)


def test_each_unrolled_step_draws_its_own_randomness():
    cfg = config()
    cfg.reweight.unroll = 2
    engine = make_engine(cfg)
    steps = [engine.pretrain_step(inner) for inner in (0, 1)]
    seeds = [step.batches[0][1] for step in steps]  # (batch, seed) of each level I
    assert seeds[0] != seeds[1]


class Counted(torch.nn.Module):
    """An objective reading the backbone's features through ``computed_once``; counts the calls."""

    def __init__(self, calls: list, scale: float):
        super().__init__()
        self.calls, self.scale = calls, scale

    def forward(self, backbone, batch):
        def features():
            self.calls.append(1)
            return backbone(batch)

        return self.scale * computed_once("test.features", features).pow(2).mean()


def test_computed_once_is_shared_within_one_evaluation_of_theta_only():
    calls: list = []
    backbone = toy_plugin.Backbone(8, 16)
    theta = PretrainModel(backbone, [Counted(calls, 1.0), Counted(calls, 3.0)], ["a", "b"])
    x = torch.randn(4, 8)
    losses = theta(x)
    assert len(calls) == 1 and losses[1].item() == pytest.approx(3 * losses[0].item())
    # gradients reach the backbone through the shared tensor from both objectives
    (g_sum,) = torch.autograd.grad(losses.sum(), [backbone.net[0].weight])
    (g_one,) = torch.autograd.grad(theta(x)[0], [backbone.net[0].weight])
    assert torch.allclose(g_sum, 4 * g_one, rtol=1e-5)
    moved = {n: p.detach() + 0.1 for n, p in theta.named_parameters()}
    perturbed = torch.func.functional_call(theta, moved, (x,))  # a new evaluation: recomputed
    assert len(calls) == 3 and not torch.allclose(perturbed, losses)
    Counted(calls, 1.0)(backbone, x)
    Counted(calls, 1.0)(backbone, x)  # outside θ's forward nothing is cached
    assert len(calls) == 5


def test_adamw_is_recognised_by_its_class_not_a_param_group_key():
    """AdamW's decay stays out of P (hypergrad.py eq. 1) on a torch whose param groups lack the
    ``decoupled_weight_decay`` key: P against autograd through AdamW's update, float64."""
    p = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    p.grad = torch.randn(6, dtype=torch.float64)
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    for group in opt.param_groups:
        group.pop("decoupled_weight_decay", None)
    (P,) = preconditioner(opt, [p])
    g = p.grad.detach().clone().requires_grad_(True)
    m, v = 0.1 * g, 0.01 * g * g  # AdamW's first step: (1 − β₁)g, (1 − β₂)g², bias-corrected below
    step = (m / 0.1) / ((v / 0.01).sqrt() + 1e-8)  # θ' = θ(1 − ηλ) − η·step: only step depends on g
    (expected,) = torch.autograd.grad(step.sum(), g)  # diagonal: each entry from its own gradient
    assert torch.allclose(P, expected, rtol=1e-10)


def test_reweight_every_k_steps_moves_alpha_k_times_as_far_on_its_steps_only():
    """``reweight.every=2``: level III runs at steps 1, 3, …, its α step (SGD) twice that of
    ``every=1`` from the same state; step 2 keeps λ, trains w, and records NaN for level III."""
    def engine(every):
        cfg = config()
        cfg.reweight.every = every
        return make_engine(cfg)

    once, every = engine(1), engine(2)
    alpha0 = every.alpha.detach().clone()
    once.step()
    first, second = every.step(), every.step()
    moved = every.alpha.detach() - alpha0
    assert moved.abs().sum() > 0
    # α is float32 near 0.7: each of the two α values rounds by up to half its spacing (3e-8)
    assert torch.allclose(moved, 2 * (once.alpha.detach() - alpha0), rtol=1e-5, atol=1e-7)
    assert math.isfinite(first["val_loss"]) and math.isnan(second["val_loss"])
    assert list(first) == list(second)  # losses.csv keeps one header
    assert second["lambda_denoise"] == pytest.approx(float(every.lam[0]))


def test_a_global_step_reads_the_device_once():
    """Every read of a tensor's value during one global step, by the function that makes it. On
    the CPU all tensors are host tensors, so reads of those that live on the host in any run
    count too; each is named here. The one read of device values is HostReads.read (the step's
    losses, finite flags, validation loss and hypergradient in one transfer)."""
    engine = make_engine(config())
    engine.step()  # the first step builds optimizer state
    with host_reads() as sites:
        engine.step()
    assert sorted(sites) == sorted([
        ("tolist", "read", "reads.py"),  # the one device read
        ("tolist", "step", "engine.py"),  # λ for the record: α lives on the host
        ("cpu", "step", "base.py"),  # AlphaOptimizer's new α: a host tensor
        *[("__float__", "record", "base.py")] * 2,  # the read hypergradient, per objective
        ("tolist", "_batches", "batches.py"),  # the sampler's order, from a CPU generator
    ])


def test_fp16_validation_gradient_is_scaled_then_unscaled():
    """Under fp16 autocast u = ∇_w L_val is taken of the loss times GradScaler's scale, then
    divided by it: against float64 autograd at the same w and batch. The head's weights are
    2⁻²⁰ (exact in fp16), so ∂L_val/∂features ≈ 3e-8 falls below fp16's smallest number and
    an unscaled backward loses u on the backbone."""
    cfg = config()
    cfg.amp, cfg.finetune.lr = "fp16", 1e-12  # level II keeps the head's weights
    engine = make_engine(cfg)
    with torch.no_grad():
        engine.w.head.weight.copy_(torch.sign(engine.w.head.weight) * 2.0 ** -20)
        engine.w.head.bias.zero_()
    drawn, seen = [], {}
    stream = engine.val

    class Val:  # the validation batch level III draws
        def __next__(self):
            drawn.append(next(stream))
            return drawn[-1]

    class Hypergradient:  # records u and the float64 reference at the same w
        needs_hessians = False

        def __call__(self, problem, hvps=None):
            x, y = drawn[-1]
            w64 = copy.deepcopy(engine.w).double()
            with frozen_running_stats(w64), replay_rng(engine._seed(3), engine.device):
                loss = task_loss("bce", w64(x.double()), y.double())
            seen["expected"] = torch.autograd.grad(loss, [p for p in w64.parameters() if p.requires_grad])
            seen["u"] = problem.u
            return torch.zeros(len(engine.names), dtype=torch.float64)

    engine.val, engine.hypergrad = Val(), Hypergradient()
    engine.step()
    nb = engine.n_backbone
    got = torch.cat([t.double().reshape(-1) for t in seen["u"][:nb]])
    names = [n for n, p in engine.w.named_parameters() if p.requires_grad]
    order = [names.index(n) for n in engine.w_names]  # u is in w_names' order
    expected = torch.cat([seen["expected"][i].reshape(-1) for i in order[:nb]])
    assert expected.abs().max() > 0
    assert float((got - expected).norm() / expected.norm()) < 0.05


def test_the_step_read_checks_in_queue_order_and_waives_a_skipped_steps_hypergradient():
    """HostReads: one transfer, the values by key; the first non-finite queued value raises,
    naming the step and the value; a hypergradient queued ``unless="skipped"`` is not checked
    when the skipped flag was read nonzero (GradScaler skipped the step: λ stays anyway)."""
    reads = HostReads(torch.device("cpu"))
    reads.defer("losses", torch.tensor([1.0, 2.0]), ["objective a", "objective b"], "lower pretrain.lr")
    reads.defer("skipped", torch.tensor(True))
    reads.defer("hypergrad", torch.tensor([math.nan, 0.5]), ["the hypergradient"] * 2, "lower reweight.lr",
                unless="skipped")
    host = reads.read(3)
    assert host["losses"] == [1.0, 2.0] and host["skipped"] == [1.0]
    assert math.isnan(host["hypergrad"][0]) and host["hypergrad"][1] == 0.5
    reads.defer("losses", torch.tensor([1.0, math.inf]), ["objective a", "objective b"], "lower pretrain.lr")
    reads.defer("hypergrad", torch.tensor([math.nan, 0.5]), ["the hypergradient"] * 2, "lower reweight.lr",
                unless="skipped")
    with pytest.raises(NonFiniteLoss, match=r"step 4 \(objective b = inf\): lower pretrain.lr") as caught:
        reads.read(4)
    assert caught.value.step == 4
    reads.defer("hypergrad", torch.tensor([math.nan, 0.5]), ["the hypergradient"] * 2, "lower reweight.lr",
                unless="skipped")
    with pytest.raises(NonFiniteLoss, match=r"step 5 \(the hypergradient = nan\)"):
        reads.read(5)  # no skipped flag this step: last step's does not carry over
