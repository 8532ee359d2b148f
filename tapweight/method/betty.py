"""The Betty reference engine: TapWeight's three levels as Betty ``ImplicitProblem``s (optional).

The TapWeight reference code (TMLR 2025) runs its levels through Betty (Choe et al., ICLR
2023) with ``type="darts"`` and unroll 1, wired as

    l2u = {pretrain: [finetune], finetune: [reweight]}      (who steps after whom)
    u2l = {reweight: [pretrain]}                             (α's hypergradient path)

Betty walks u2l's edge along l2u into the path reweight → finetune → pretrain → reweight:
u = ∇_w L_val(w'); darts(u, finetune → pretrain) finite-differences ∇_θ of level II's loss
along u, which is exactly 2γ u_b (the proximal term is linear in w); darts(2γu_b, pretrain →
reweight) finite-differences ∇_α Σ_k softmax(α)_k L_k(θ') along it. So Betty's α gradient is

    ∂/∂α = J_softmaxᵀ (L(θ' − εv) − L(θ' + εv)) / 2ε,   v = 2γ u_b,  ε = R / ‖v‖,

eq. (1) of hypergrad.py at ``scale="reference"`` (no η₁η₂), but evaluated at θ' (after the
level I step) where our one-step method uses θ (before it). This module builds those three
problems from the very objects `tapweight.method.engine.Engine` uses (θ, w, the batch
streams, the RunConfig), as the reference the default method is tested against
(tests/test_betty.py) and the baseline of the benchmark (bench/). It is not a training backend.

Betty 0.2.1 is not a dependency: ``pip install --no-deps --ignore-requires-python
betty-ml==0.2.1`` (it declares Python < 3.11; it imports and runs on 3.11 unchanged).
Known pitfalls, and what this module does about each:

- Betty rebuilds every optimizer from its class and ``defaults`` (merging param groups,
  dropping state) and rebuilds schedulers the same way (``LambdaLR`` with several groups
  then fails): problems are built with our optimizers and no scheduler, and after Betty's
  initialisation our optimizer objects are put back and our schedulers installed.
- Betty's ``cg`` has a sign bug (and iterates with the old residual): only ``darts``, the
  reference setting, is wired here; the IFT methods are hypergrad.py's own.
- Random draws: each evaluation of a level's loss replays that level's seed for the step
  (the Engine's seeds), so darts's difference compares the same masks and crops, as ours.
  The reference code does not replay; its difference then also carries sampling noise.
- Batch norm: darts's extra forwards run with running statistics frozen, as the Engine's
  (stock Betty would count each pretraining batch three times in them). Outputs in train
  mode use batch statistics either way, so the gradients are unaffected.
- With ``pretrain.accumulate = A`` Betty steps θ every A micro-batches (``gradient_
  accumulation``) and darts sees only the last one; its scheduler steps per micro-batch, so
  ours is built on micro-batch counts. Only unroll 1 is supported (the reference's).
- Betty logs INFO lines to stdout: its logger is set to WARNING.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.method.batches import BatchStream, to_device
from tapweight.method.engine import Engine
from tapweight.method.metrics import task_loss
from tapweight.method.models import PretrainModel, TaskModel, backbone_params, frozen_running_stats, replay_rng
from tapweight.method.optim import build_optimizer, build_scheduler, lr_factor

log = logging.getLogger(__name__)

BETTY_VERSION = "0.2.1"
INSTALL = f"pip install --no-deps --ignore-requires-python betty-ml=={BETTY_VERSION}"


def import_betty() -> SimpleNamespace:
    """Betty's classes, imported on first use; a one-line TapweightError if it is missing."""
    try:
        import betty
        from betty.configs import Config, EngineConfig
        from betty.engine import Engine as MultilevelEngine
        from betty.logging.logger_base import get_logger
        from betty.problems import ImplicitProblem
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "betty":
            raise
        raise TapweightError(f"the Betty reference engine needs betty-ml: {INSTALL}") from None
    if betty.__version__ != BETTY_VERSION:
        log.warning("betty-ml %s found; the reference engine was written for %s",
                    betty.__version__, BETTY_VERSION)
    get_logger().setLevel(logging.WARNING)
    return SimpleNamespace(Config=Config, EngineConfig=EngineConfig, Engine=MultilevelEngine,
                           problems=_problem_classes(ImplicitProblem))


@functools.cache
def _problem_classes(implicit_problem: type) -> SimpleNamespace:
    """The three levels as subclasses of Betty's ``ImplicitProblem`` (defined once betty is here).

    Betty gives each problem the others as attributes named after them (``self.pretrain``...).
    """

    class Level(implicit_problem):
        """A level fed by a BatchStream whose loss replays the step's random draws."""

        def __init__(self, name, config, module, optimizer, owner: BettyEngine,
                     stream: BatchStream, level: int):
            super().__init__(name, config, module, optimizer)
            self.owner, self.stream, self.level = owner, stream, level
            self.seed, self.descending = 0, False

        def get_batch(self):
            self.seed = self.owner._seed(self.level, (self._count - 1) % self.gas)
            return to_device(next(self.stream), self.owner.device)

        def trainable_parameters(self):
            return [p for p in self.module.parameters() if p.requires_grad]

        def one_step_descent(self, batch=None):
            self.descending = True  # this level's own step; other evaluations are darts's
            try:
                return super().one_step_descent(batch)
            finally:
                self.descending = False

        def training_step(self, batch):
            stats = contextlib.nullcontext() if self.descending else frozen_running_stats(self.module)
            with stats, replay_rng(self.seed, self.owner.device):
                return self.loss(batch)

    class Pretrain(Level):
        """Level I: Σ_k softmax(α)_k L_k(θ), differentiable in α for darts."""

        def loss(self, batch):
            lam = torch.softmax(self.reweight.module.alpha, 0)
            return (lam * self.module(batch)).sum()

    class Finetune(Level):
        """Level II: L_ft(w) + γ‖w_b − θ_b‖², differentiable in θ for darts."""

        def loss(self, batch):
            x, y = batch
            diff = [(a - b).pow(2).sum() for a, b in zip(backbone_params(self.module),
                                                          backbone_params(self.pretrain.module))]
            return task_loss(self.owner.loss_kind, self.module(x), y) + self.owner.gamma * sum(diff)

    class Reweight(Level):
        """Level III: L_val(w); its α gradient is read (and kept) before α steps."""

        def loss(self, batch):
            x, y = batch
            loss = task_loss(self.owner.loss_kind, self.finetune.module(x), y)
            self.owner.val_loss = loss.detach()
            return loss

        def grad_callback(self):
            self.owner.alpha_grad = self.module.alpha.grad.detach().clone()

    return SimpleNamespace(Pretrain=Pretrain, Finetune=Finetune, Reweight=Reweight)


class Weights(nn.Module):
    """α, the K objective logits (λ = softmax(α)), as the module of the reweight problem."""

    def __init__(self, alpha: nn.Parameter):
        super().__init__()
        self.alpha = alpha


class BettyEngine:
    """Levels I–III through Betty's ``darts`` (the reference code's wiring), one global step
    at a time; ``alpha_grad`` is the α gradient of the last step."""

    # the Engine's per-level seeds and λ, so both engines draw and weight alike
    _seed = Engine._seed
    lam = Engine.lam

    def __init__(self, pretrain_model: PretrainModel, task_model: TaskModel, corpus: BatchStream,
                 train: BatchStream, val: BatchStream, cfg: RunConfig, loss_kind: str,
                 device: torch.device, initial_weights: Sequence[float] | None = None):
        if cfg.reweight.unroll != 1:
            raise TapweightError("the Betty reference engine runs unroll 1 only (reweight.unroll=1)")
        betty = import_betty()
        self.theta, self.w = pretrain_model.to(device), task_model.to(device)
        self.cfg, self.loss_kind, self.device = cfg, loss_kind, device
        self.gamma = cfg.finetune.gamma
        self.names = [n.split(".", 1)[-1] for n in pretrain_model.names]
        k = len(self.names)
        lam0 = torch.full((k,), 1.0 / k) if initial_weights is None else torch.tensor(initial_weights)
        lam0 = lam0.double() / lam0.sum()
        self.alpha = nn.Parameter(torch.log(lam0.clamp_min(1e-12)).float().to(device))
        self.step_count = 0
        self.alpha_grad: torch.Tensor | None = None
        self.val_loss: torch.Tensor | None = None

        p, f, r = cfg.pretrain, cfg.finetune, cfg.reweight
        theta_params = [q for q in self.theta.parameters() if q.requires_grad]
        w_backbone = backbone_params(self.w)
        w_head = [q for q in self.w.head.parameters() if q.requires_grad]
        optimizers = (build_optimizer(theta_params, p),
                      build_optimizer([{"params": w_backbone}, {"params": w_head}], f),
                      build_optimizer([self.alpha], r))
        amp = cfg.amp if device.type == "cuda" else "no"
        level = functools.partial(betty.Config, type="darts", unroll_steps=1, darts_alpha=r.fd_radius,
                                  precision={"no": "fp32"}.get(amp, amp))
        classes = betty.problems
        problems = [
            classes.Pretrain("pretrain", level(gradient_accumulation=p.accumulate), self.theta,
                             optimizers[0], self, corpus, 1),
            classes.Finetune("finetune", level(), self.w, optimizers[1], self, train, 2),
            classes.Reweight("reweight", level(), Weights(self.alpha), optimizers[2], self, val, 3),
        ]
        self.pretrain, self.finetune, self.reweight = problems
        dependencies = {"u2l": {self.reweight: [self.pretrain]},
                        "l2u": {self.pretrain: [self.finetune], self.finetune: [self.reweight]}}
        strategy = "cpu" if device.type == "cpu" else "gpu"
        self.core = betty.Engine(problems, betty.EngineConfig(train_iters=cfg.steps, strategy=strategy),
                                 dependencies)
        # Betty rebuilt the optimizers (merged groups, no state): put ours back, add schedulers
        for problem, optimizer in zip(problems, optimizers):
            problem.optimizer = optimizer
        micro = lr_factor(p, cfg.steps)  # Betty steps level I's scheduler per micro-batch
        self.pretrain.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizers[0], lambda i: micro(i // p.accumulate))
        self.finetune.scheduler = build_scheduler(optimizers[1], f, cfg.steps)
        self.reweight.scheduler = build_scheduler(optimizers[2], r, cfg.steps)

    def step(self) -> dict[str, float]:
        """One global step (level I over its micro-batches, then II, then III)."""
        lam = self.lam
        for _ in range(self.cfg.pretrain.accumulate):
            self.core.global_step += 1
            self.core.train_step()
        self.step_count += 1
        record: dict[str, float] = {"step": self.step_count, "val_loss": float(self.val_loss)}
        record.update({f"lambda_{n}": float(v) for n, v in zip(self.names, lam)})
        record.update({f"alpha_grad_{n}": float(g) for n, g in zip(self.names, self.alpha_grad)})
        return record
