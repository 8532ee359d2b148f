"""An independent answer for the hypergradient in every setting the config accepts: autograd
through the unrolled level I and level II optimizer steps, in float64.

The optimizers are torch's SGD (momentum, weight decay), Adam and AdamW updates written as
differentiable functions of the gradient (``sgd``, ``adam``), checked step for step against
``torch.optim`` (tests/test_hypergrad_settings.py). Learning rates come from the schedule
formula (``lr_factor``) at the scheduler's count, not from the engine. The engine under test
is never called: the reference reads a deep copy of it taken before the step (its parameters,
optimizer states, scheduler counts, streams and seeds) and replays the batches and random
draws the step will use.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from tapweight.config import LevelConfig, RunConfig
from tapweight.method.batches import BatchStream
from tapweight.method.engine import Engine
from tapweight.method.metrics import task_loss
from tapweight.method.models import PretrainModel, TaskModel, frozen_running_stats, replay_rng
from tapweight.method.optim import lr_factor


def sgd(p, g, state: dict, group: dict, lr: float):
    """torch.optim.SGD's update (dampening 0, no Nesterov); returns (p', state')."""
    g = g + group["weight_decay"] * p
    if group["momentum"]:
        buf = state.get("momentum_buffer")
        buf = g if buf is None else group["momentum"] * buf + g
        return p - lr * buf, {"momentum_buffer": buf}
    return p - lr * g, {}


def adam(p, g, state: dict, group: dict, lr: float):
    """torch.optim.Adam / AdamW's update (no amsgrad); returns (p', state')."""
    (beta1, beta2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
    t = float(state["step"]) + 1 if "step" in state else 1.0
    if group.get("decoupled_weight_decay"):
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = (1 - beta1) * g + (beta1 * state["exp_avg"] if "exp_avg" in state else 0)
    v = (1 - beta2) * g * g + (beta2 * state["exp_avg_sq"] if "exp_avg_sq" in state else 0)
    # √v with a zero derivative at v = 0 (an entry whose gradient is exactly zero)
    root = torch.where(v > 0, v.clamp_min(torch.finfo(v.dtype).tiny).sqrt(), torch.zeros_like(v))
    step = m / (root / math.sqrt(1 - beta2 ** t) + eps)
    return p - lr / (1 - beta1 ** t) * step, {"step": t, "exp_avg": m, "exp_avg_sq": v}


def update(optimizer: torch.optim.Optimizer):
    return sgd if isinstance(optimizer, torch.optim.SGD) else adam


def rates(level: LevelConfig, scheduler, total: int, n: int) -> list[float]:
    """The learning rates of the scheduler's next ``n`` steps, from the schedule formula."""
    factor = lr_factor(level, total)
    return [level.lr * factor(scheduler.last_epoch + i) for i in range(n)]


def states(optimizer: torch.optim.Optimizer, params) -> list[dict]:
    return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state.get(p, {}).items()}
            for p in params]


def groups(optimizer: torch.optim.Optimizer, params) -> list[dict]:
    by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return [by_id[id(p)] for p in params]


def snapshot(engine: Engine) -> Engine:
    """A deep copy of ``engine`` (streams restarted at their positions)."""
    for stream in (engine.corpus, engine.train, engine.val):
        stream.load_state_dict(stream.state_dict())
    return copy.deepcopy(engine)


def alpha_grad(twin: Engine) -> torch.Tensor:
    """d L_val(w_T(θ_T(α))) / dα for the next global step of ``twin`` (a snapshot), by autograd
    through its T = unroll level I/II steps, the optimizer updates included."""
    cfg, kind, dev = twin.cfg, twin.loss_kind, twin.device
    unroll, accumulate, gamma = cfg.reweight.unroll, cfg.pretrain.accumulate, cfg.finetune.gamma
    alpha = twin.alpha.detach().double().requires_grad_(True)
    lam = torch.softmax(alpha, 0)
    theta = [p.detach().clone().requires_grad_(True) for p in twin.theta_params]
    w = [p.detach().clone().requires_grad_(True) for p in twin.w_params]
    s1, g1 = states(twin.state.opt_pretrain, twin.theta_params), groups(twin.state.opt_pretrain, twin.theta_params)
    s2, g2 = states(twin.state.opt_finetune, twin.w_params), groups(twin.state.opt_finetune, twin.w_params)
    eta1 = rates(cfg.pretrain, twin.state.sched_pretrain, cfg.steps * unroll, unroll)
    eta2 = rates(cfg.finetune, twin.state.sched_finetune, cfg.steps * unroll, unroll)
    nb = twin.n_backbone
    for inner in range(unroll):
        total = 0.0
        for i in range(accumulate):
            batch = next(twin.corpus)
            with frozen_running_stats(twin.theta), replay_rng(twin._seed(1, inner * accumulate + i), dev):
                losses = torch.func.functional_call(twin.theta, dict(zip(twin.theta_names, theta)), (batch,))
            total = total + (lam * losses).sum() / accumulate
        grads = torch.autograd.grad(total, theta, create_graph=True)
        step1 = update(twin.state.opt_pretrain)
        stepped = [step1(p, g, s, grp, eta1[inner]) for p, g, s, grp in zip(theta, grads, s1, g1)]
        theta, s1 = [p for p, _ in stepped], [s for _, s in stepped]

        x, y = next(twin.train)
        with frozen_running_stats(twin.w), replay_rng(twin._seed(2, inner), dev):
            loss = task_loss(kind, torch.func.functional_call(twin.w, dict(zip(twin.w_names, w)), (x,)), y)
        loss = loss + gamma * sum(((a - b) ** 2).sum() for a, b in zip(w[:nb], theta[:nb]))
        grads = torch.autograd.grad(loss, w, create_graph=True)
        stepped = [update(twin.state.opt_finetune)(p, g, s, grp, eta2[inner]) for p, g, s, grp in zip(w, grads, s2, g2)]
        w, s2 = [p for p, _ in stepped], [s for _, s in stepped]
    x, y = next(twin.val)
    with frozen_running_stats(twin.w), replay_rng(twin._seed(3), dev):
        outputs = torch.func.functional_call(twin.w, dict(zip(twin.w_names, w)), (x,))
        if cfg.reweight.val_loss == "offset_free":
            outputs = outputs + newton_offset(outputs, y)
        val = task_loss(kind, outputs, y)
    return torch.autograd.grad(val, alpha)[0]


def newton_offset(z: torch.Tensor, y: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """The per-column offset minimising the masked BCE of z + b, by Newton's method, with
    its dependence on z kept (autograd through the iterations), unlike the engine's."""
    present, target = ~torch.isnan(y), torch.nan_to_num(y)
    b = torch.zeros(z.shape[1:], dtype=z.dtype)
    for _ in range(iterations):
        p = torch.sigmoid(z + b)
        b = b - ((p - target) * present).sum(0) / (p * (1 - p) * present).sum(0)
    return b


# -- a small non-quadratic float64 problem: tanh network, batch norm, dropout, three objectives ---

class Backbone(nn.Module):
    out_dim = 12

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Dropout(0.1),
                                 nn.Linear(12, 12), nn.Tanh())

    def forward(self, x):
        return self.net(x)


class Denoise(nn.Module):
    """Reconstruct x from the features of a noisy copy (a random draw, replayed)."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.Linear(12, 6)

    def forward(self, backbone, x):
        return ((self.decoder(backbone(x + 0.2 * torch.randn_like(x))) - x) ** 2).mean()


class Clusters(nn.Module):
    """Cross-entropy of a linear classifier over fixed pseudo-labels (the sign pattern of x)."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(12, 4)

    def forward(self, backbone, x):
        labels = (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()
        return nn.functional.cross_entropy(self.classifier(backbone(x)), labels)


class Smooth(nn.Module):
    """Mean softplus of the features (no parameters of its own)."""

    def forward(self, backbone, x):
        return nn.functional.softplus(backbone(x)).mean()


def collate(items):
    return tuple(torch.stack(t) for t in zip(*items))


def engine(cfg: RunConfig, dtype=torch.float64, seed: int = 0) -> Engine:
    """The problem's engine: 48 corpus rows (batches of ``cfg.pretrain.batch_size``), train and
    val sets of 16 read whole, binary labels."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(48, 6, generator=g, dtype=torch.float64).to(dtype)
    xt, xv = (torch.randn(16, 6, generator=g, dtype=torch.float64).to(dtype) for _ in range(2))
    yt, yv = ((v[:, :1] + 0.3 * torch.randn(16, 1, generator=g, dtype=torch.float64) > 0).to(dtype)
              for v in (xt, xv))
    backbone = Backbone().to(dtype)
    theta = PretrainModel(backbone, [Denoise(), Clusters(), Smooth()], ["t.denoise", "t.clusters", "t.smooth"])
    w = TaskModel(copy.deepcopy(backbone), nn.Linear(12, 1)).to(dtype)
    theta.to(dtype)
    corpus = BatchStream(torch.utils.data.TensorDataset(x), cfg.pretrain.batch_size,
                         lambda it: torch.stack([i[0] for i in it]), seed)
    train = BatchStream(torch.utils.data.TensorDataset(xt, yt), 16, collate, seed + 1)
    val = BatchStream(torch.utils.data.TensorDataset(xv, yv), 16, collate, seed + 2)
    return Engine(theta, w, corpus, train, val, cfg, "bce", torch.device("cpu"), True, [0.5, 0.3, 0.2])


def config(optimizer: str = "sgd", **reweight) -> RunConfig:
    """Both inner levels on ``optimizer`` with momentum / weight decay on, γ large enough to
    matter, a plain SGD level III; ``reweight`` keys override."""
    cfg = RunConfig(steps=20)
    for level, lr in (("pretrain", 0.05), ("finetune", 0.1)):
        sub = getattr(cfg, level)
        sub.optimizer, sub.lr, sub.momentum, sub.weight_decay = optimizer, lr, 0.9, 1e-3
        sub.scheduler = "constant"
        if optimizer != "sgd":
            sub.lr = lr / 20
    cfg.pretrain.batch_size, cfg.finetune.gamma = 16, 0.3
    cfg.reweight.lr, cfg.reweight.scheduler, cfg.reweight.scale = 0.5, "constant", "exact"
    for key, value in reweight.items():
        setattr(cfg.reweight, key, value)
    return cfg


def hypergradients(cfg: RunConfig, warmup: int = 3, dtype=torch.float64, seed: int = 0):
    """(the engine's ∂L_val/∂α, autograd's through the unrolled steps) for the global step after
    ``warmup`` steps; the reference runs without autocast."""
    under_test = engine(cfg, dtype, seed)
    for _ in range(warmup):
        under_test.step()
    expected = alpha_grad(snapshot(under_test))
    under_test.step()
    return under_test.alpha.grad, expected
