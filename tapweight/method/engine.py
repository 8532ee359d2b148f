"""The three-level TapWeight engine, shared by every domain.

One global step (``Engine.step``) runs ``unroll`` times level I (``pretrain_step``) and
level II (``finetune_step``), then level III (``reweight_step``):

    I    θ ← θ − η₁ ∇_θ Σ_k λ_k L_k(θ; D_pt)                           λ = softmax(α)
    II   w ← w − η₂ ∇_w [L_ft(w; D_train) + γ‖w_b − θ_b‖²]
    III  α ← α − η₃ ∂L_val(w; D_val)/∂α                      (hypergradient: hypergrad.py)

The step of α is the run's weighting method's (method/weightings/; TapWeight's is above), and
only what it declares it reads is computed: levels II and III (not for ``uniform``, ``gradnorm``),
the hypergradient (method/estimators.py), each objective's own gradient. Every random draw of a
step comes from a seed derived from (run seed, step, level), so a run is reproducible and resumes exactly.

Each level returns a frozen record (method/levels.py): level I's `LevelOne` (θ before
the step, the objectives' losses, its batches, the rate and, for Adam, the preconditioner it
used), level II's `LevelTwo`, and level III's `LevelThree` (u = ∇_w L_val(w'),
the hypergradient), which reads the ``unroll`` (level I, level II) pairs of its global step.
The weighting reads a `Signal` made of the records. What survives a step is the
engine's `State` (method/state.py), which the checkpoint saves. A step that AMP's
GradScaler skips (inf/NaN gradients) leaves θ' = θ or w' = w, so its level III is skipped too.
A step reads the device once, at its end (method/reads.py); α lives on the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.profiler import record_function

from tapweight import distributed
from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.method import estimators
from tapweight.method.batches import BatchStream, head_of_batch, to_device
from tapweight.method.hypergrad import Names, Problem, hessian_vector_product
from tapweight.method.levels import InnerStep, LevelOne, LevelThree, LevelTwo, Precision, Vector
from tapweight.method.metrics import best_offset, overconfidence, task_loss
from tapweight.method.models import PretrainModel, TaskModel, backbone_params, float32, frozen_running_stats, replay_rng
from tapweight.method.optim import build_optimizer, build_scheduler, current_lr, loss_scale, preconditioner, scaled_step
from tapweight.method.reads import HostReads
from tapweight.method.state import State
from tapweight.method.weightings import Signal, Weighting, default_weighting
from tapweight.method.weightings.gradients import ObjectiveGradients

log = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Engine:
    """Levels I–III over a θ model, a w model, and three batch streams, λ set by ``weighting``
    (default: ``tapweight`` if ``learn_weights``, else fixed ``initial_weights``, uniform when None)."""

    def __init__(self, pretrain_model: PretrainModel, task_model: TaskModel, corpus: BatchStream,
                 train: BatchStream | None, val: BatchStream | None, cfg: RunConfig, loss_kind: str,
                 device: torch.device, learn_weights: bool = True,
                 initial_weights: Sequence[float] | None = None, weighting: Weighting | None = None):
        # on CUDA, convolution weights in channels-last order (faster convolutions; a no-op
        # for models without 4-d weights): domains' backbones convert their images likewise
        memory = torch.channels_last if device.type == "cuda" else torch.preserve_format
        self.theta = pretrain_model.to(device, memory_format=memory)
        self.w = task_model.to(device, memory_format=memory)
        # the models levels I and II train through: DistributedDataParallel under torchrun
        self.theta_ddp = distributed.wrap(self.theta, device)
        self.w_ddp = distributed.wrap(self.w, device)
        self.corpus, self.train, self.val = corpus, train, val
        self.cfg, self.loss_kind, self.device = cfg, loss_kind, device
        weighting = weighting or default_weighting(cfg, learn_weights, initial_weights)
        self.learn_weights = learn_weights = weighting.learns
        if learn_weights and cfg.reweight.val_loss == "offset_free" and loss_kind != "bce":
            raise TapweightError(f"reweight.val_loss=offset_free refits the offset of binary labels: this task's "
                                 f"loss is {loss_kind}; use reweight.val_loss=plain")
        self.names = [n.split(".", 1)[-1] for n in pretrain_model.names]
        # α lives on the host: the weightings update it there, λ goes to the device without a sync
        alpha = torch.nn.Parameter(weighting.start_logits(pretrain_model.names).float())

        named = [(n, p) for n, p in self.theta.named_parameters() if p.requires_grad]
        self.theta_names = [n for n, _ in named]
        self.theta_params = [p for _, p in named]
        self.n_backbone = sum(n.startswith("backbone.") for n in self.theta_names)
        self.w_backbone = backbone_params(self.w)
        w_named = [(n, p) for n, p in self.w.named_parameters() if p.requires_grad]
        self.w_names = ([n for n, _ in w_named if n.startswith("backbone.")]
                        + [n for n, _ in w_named if n.startswith("head.")])
        self.w_params = self.w_backbone + [p for p in self.w.head.parameters() if p.requires_grad]
        self.parameter_names = Names.matched(self.theta_names, self.w_names)  # θ_b and w_b, paired by name
        self.gradients = ObjectiveGradients.of(weighting, self.theta_names, self.theta_params, self.n_backbone)

        steps, unroll = cfg.steps, cfg.reweight.unroll
        opt_pretrain = build_optimizer(self.theta_params, cfg.pretrain)
        opt_finetune = build_optimizer(
            [{"params": self.w_backbone}, {"params": self.w_params[self.n_backbone:]}], cfg.finetune)
        every = cfg.reweight.every  # level III on every k-th step only, at k times α's rate
        opt_reweight = build_optimizer([alpha], dataclasses.replace(cfg.reweight, lr=cfg.reweight.lr * every))
        self.state = State(
            self.theta, self.w, {"corpus": corpus, "train": train, "val": val},
            alpha, weighting, opt_pretrain, opt_finetune, opt_reweight,
            build_scheduler(opt_pretrain, cfg.pretrain, steps * unroll),
            build_scheduler(opt_finetune, cfg.finetune, steps * unroll),
            build_scheduler(opt_reweight, cfg.reweight, max(1, steps // every)),
            torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
            torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"))

        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.hypergrad = estimators.build(cfg, device)  # reweight.hypergrad, auto resolved (estimators.py)
        self.reads = HostReads(device)  # the step's one read of device values
        self.phase_times: dict[str, float] | None = None  # set to {} to time each level (_phase)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.nn.Parameter:
        """The logits α (the state's)."""
        return self.state.alpha

    @property
    def step_count(self) -> int:
        """Global steps taken."""
        return self.state.step

    @property
    def history(self) -> list[dict[str, float]]:
        """The record of every global step taken."""
        return self.state.history

    @property
    def lam(self) -> torch.Tensor:
        """λ = softmax(α), the objective weights."""
        return torch.softmax(self.alpha.detach().double(), 0)

    def _seed(self, level: int, index: int = 0) -> int:
        """A seed for one level of one step, from (run seed, step, level, index)."""
        entropy = [self.cfg.seed, self.step_count, level, index]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    @contextlib.contextmanager
    def _phase(self, name: str):
        """A ``torch.profiler`` range ``tapweight.<name>`` around one level (or the
        hypergradient), so any profile of a run shows the three levels. While
        ``phase_times`` is a dict, the range's wall time is also added to it under ``name``,
        the device synchronised at both ends (the benchmark's time-per-level table)."""
        timing = self.phase_times is not None
        if timing:
            synchronize(self.device)
            start = time.perf_counter()
        with record_function(f"tapweight.{name}"):
            yield
        if timing:
            synchronize(self.device)
            self.phase_times[name] = self.phase_times.get(name, 0.0) + time.perf_counter() - start

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _precondition(self, optimizer: torch.optim.Optimizer, params: Vector) -> Vector | None:
        """P of the step ``optimizer`` is about to take (hypergrad.py eq. 1), or None (P = 1)
        under ``reweight.preconditioner=identity``: the reference code's convention, which
        treats every inner step as an SGD step."""
        if self.cfg.reweight.preconditioner == "identity":
            return None
        return preconditioner(optimizer, params)

    def losses(self, batches: list, params: Vector, precision: Precision = "float32") -> torch.Tensor:
        """L(θ) ∈ R^K on level I ``batches`` ((batch, seed) pairs, their random draws replayed),
        θ's parameters replaced by ``params``, batch-norm statistics untouched, in ``precision``:
        float32 without TF32 (a central difference needs every digit; jvp's exactness), with TF32
        as torch allows it, or exactly as level I ran (``level_one``: the run's autocast, for a
        difference against level I's own losses)."""
        replaced = dict(zip(self.theta_names, params))
        arithmetic = (self._autocast() if precision == "level_one"
                      else float32(self.device, tf32=precision == "tf32"))
        total = 0.0
        with frozen_running_stats(self.theta), arithmetic:
            for batch, seed in batches:
                with replay_rng(seed, self.device):
                    total = total + torch.func.functional_call(self.theta, replaced, (batch,))
        return total / len(batches)

    # -- level I -----------------------------------------------------------------------------
    def pretrain_step(self, inner: int = 0) -> LevelOne:
        """One step of θ on Σ_k λ_k L_k, accumulated over ``pretrain.accumulate`` batches;
        ``inner`` is which of the global step's ``unroll`` steps it is (for its seeds)."""
        accumulate, r, state = self.cfg.pretrain.accumulate, self.cfg.reweight, self.state
        self.theta.train()
        theta_before = [p.detach().clone() for p in self.theta_params] if self.learn_weights else []
        lam = self.lam.float().to(self.device, non_blocking=True)
        batches, total = [], torch.zeros(len(self.names), device=self.device)
        for i in range(accumulate):
            batch = to_device(next(self.corpus), self.device)
            seed = self._seed(1, inner * accumulate + i)
            sync = i == accumulate - 1 or self.theta_ddp is self.theta  # all-reduce once, at the end
            with (contextlib.nullcontext() if sync else self.theta_ddp.no_sync()):
                with replay_rng(seed, self.device), self._autocast():
                    losses = self.theta_ddp(batch)  # [K], unweighted
                if self.gradients:  # each ∇L_k apart, through the graph the backward then uses
                    self.gradients.add(losses, i, accumulate, loss_scale(state.scaler_pretrain, self.device))
                state.scaler_pretrain.scale((lam * losses).sum() / accumulate).backward()
            total += losses.detach() / accumulate
            batches.append((batch, seed))
        local = total.clone()  # this process's L(θ), before the all-reduce
        distributed.mean_([total])
        eta = current_lr(state.opt_pretrain)
        self.reads.defer("losses", total, [f"objective {n}" for n in self.names],
                         f"lower pretrain.lr (now {eta:g}) or check the data")
        precondition = None
        if self.learn_weights:
            state.scaler_pretrain.unscale_(state.opt_pretrain)
            precondition = self._precondition(state.opt_pretrain, self.theta_params[:self.n_backbone])
        skipped = scaled_step(state.scaler_pretrain, state.opt_pretrain, self.device)
        state.sched_pretrain.step()
        if not self.learn_weights:
            return LevelOne(losses=total.detach(), local_losses=local, eta=eta, skipped=skipped)
        hyper = [(head_of_batch(b, r.hyper_fraction), s) for b, s in batches]
        group = state.opt_pretrain.param_groups[0]
        return LevelOne(losses=total.detach(), local_losses=local, eta=eta, skipped=skipped, theta=theta_before,
                        batches=hyper, evaluate=functools.partial(self.losses, hyper), precondition=precondition,
                        momentum=group.get("momentum", 0.0), decay=group["weight_decay"])

    # -- level II ----------------------------------------------------------------------------
    def finetune_loss(self, x, y, seed: int, model=None) -> torch.Tensor:
        with replay_rng(seed, self.device), self._autocast():
            return task_loss(self.loss_kind, (model or self.w)(x), y)

    def finetune_step(self, inner: int = 0) -> LevelTwo:
        """One step of w on L_ft + γ‖w_b − θ_b‖² (its record's ``loss`` on the device); the
        proximal gradient is added in closed form."""
        gamma, unrolled, state = self.cfg.finetune.gamma, self.cfg.reweight.unroll > 1, self.state
        self.w.train()
        w_before = [p.detach().clone() for p in self.w_params] if unrolled else None
        x, y = to_device(next(self.train), self.device)
        seed = self._seed(2, inner)
        loss = self.finetune_loss(x, y, seed, self.w_ddp)
        self.reads.defer("finetune_loss", loss, ["the fine-tuning loss"],
                         f"lower finetune.lr (now {current_lr(state.opt_finetune):g}) or check the labels")
        state.scaler_finetune.scale(loss).backward()
        state.scaler_finetune.unscale_(state.opt_finetune)
        with torch.no_grad():
            diff = torch._foreach_sub([p.detach() for p in self.w_backbone],
                                      [p.detach() for p in self.theta_params[:self.n_backbone]])
            for p, d in zip(self.w_backbone, diff):  # ∇ γ‖w_b − θ_b‖² = 2γ (w_b − θ_b)
                p.grad = 2 * gamma * d if p.grad is None else p.grad.add_(d, alpha=2 * gamma)
            proximal = gamma * torch.stack(torch._foreach_norm(diff)).double().pow(2).sum()
        eta = current_lr(state.opt_finetune)
        precondition = self._precondition(state.opt_finetune, self.w_backbone)
        skipped = scaled_step(state.scaler_finetune, state.opt_finetune, self.device)
        state.sched_finetune.step()
        group = state.opt_finetune.param_groups[0]
        return LevelTwo(loss=loss.detach() + proximal, eta=eta, skipped=skipped, precondition=precondition,
                        w=w_before, finetune_loss=functools.partial(self._finetune_loss_at, x, y, seed),
                        momentum=group.get("momentum", 0.0), decay=group["weight_decay"])

    def _finetune_loss_at(self, x, y, seed: int, params: Vector) -> torch.Tensor:
        """L_ft at w's parameters replaced by ``params``, in float32, statistics untouched."""
        replaced = dict(zip(self.w_names, params))
        with frozen_running_stats(self.w), float32(self.device), replay_rng(seed, self.device):
            return task_loss(self.loss_kind, torch.func.functional_call(self.w, replaced, (x,)), y)

    # -- level III ---------------------------------------------------------------------------
    def reweight_step(self, steps: Sequence[InnerStep]) -> LevelThree:
        """Level III on the global step's ``steps`` (oldest first): w's validation loss, u =
        ∇_w L_val(w'), the hypergradient dL_val/dλ if the weighting reads it; then the step's read.
        A step GradScaler skipped leaves L_val independent of its λ: no u, hypergradient 0."""
        state = self.state
        x, y = to_device(next(self.val), self.device)
        with frozen_running_stats(self.w), replay_rng(self._seed(3), self.device), self._autocast():
            outputs = self.w(x)
            if self.cfg.reweight.val_loss == "offset_free":
                outputs = outputs + best_offset(outputs, y)
            val_loss = task_loss(self.loss_kind, outputs, y)
        mean_loss, mean_overconfidence = distributed.mean_(
            [val_loss.detach().float(), overconfidence(self.loss_kind, outputs, y)])
        self.reads.defer("values", torch.stack([mean_loss.double(), mean_overconfidence.double()]))
        skipped = [f for s in steps for f in (s.pretrain.skipped, s.finetune.skipped) if f is not False]
        if skipped:  # θ' = θ or w' = w; fp16's flags are on the device
            self.reads.defer("skipped", torch.stack([torch.as_tensor(f, device=self.device) for f in skipped]).any())
        scale = loss_scale(state.scaler_finetune, self.device)
        u = torch.autograd.grad(val_loss * scale, self.w_params, allow_unused=True)  # scaled, then unscaled
        u = distributed.mean_([torch.zeros_like(p) if g is None else g.detach() / scale
                               for p, g in zip(self.w_params, u)])
        if state.weighting.hypergradient:
            problem = Problem(steps=list(steps), u=u, gamma=self.cfg.finetune.gamma, names=self.parameter_names,
                              theta_after=[p.detach() for p in self.theta_params])
            with self._phase("hypergradient"):
                if self.hypergrad.needs_hessians:
                    problem.hvp_finetune, problem.hvp_pretrain = self._implicit_hessians(steps[-1])
                g_lam = self.hypergrad(problem, functools.partial(self._unrolled_hessians, steps))
                g_lam = distributed.mean_([g_lam])[0]  # this rank's shard -> global mean
            self.reads.defer("hypergrad", g_lam, ["the hypergradient"] * len(self.names),  # w diverged, or α's
                             f"lower finetune.lr (now {current_lr(state.opt_finetune):g}) or reweight.lr "  # steps too
                             f"(now {current_lr(state.opt_reweight):g})", unless="skipped")  # large
        host = self.reads.read(self.step_count + 1)
        values = dict(zip(("val_loss", "val_overconfidence"), host["values"]))
        hypergrad = torch.tensor(host["hypergrad"], dtype=torch.float64) if "hypergrad" in host else None
        if not host.get("skipped", [0.0])[0]:
            return LevelThree(values, u=u, hypergrad=hypergrad)
        log.info("step %d: GradScaler skipped a level I/II step (inf/NaN gradients): λ stays", self.step_count + 1)
        return LevelThree(values, hypergrad=None if hypergrad is None else torch.zeros_like(hypergrad), skipped=True)

    def signal(self, one: LevelOne, three: LevelThree | None = None) -> Signal:
        """What the weighting reads of a global step, after its read: its last level I record (λ,
        the losses read, rate, the objectives' gradients) and level III's (hypergradient, dots with u_b)."""
        gradients, skipped = self.gradients, three is not None and three.skipped
        losses = torch.tensor(self.reads.host["losses"], dtype=torch.float64)
        signal = Signal(step=self.step_count, lam=self.lam, losses=losses,
                        alpha=self.alpha.detach().double(), reweight=self.state.reweight,
                        eta_pretrain=one.eta, skipped=skipped,
                        grad_norms=gradients.norms() if gradients else None,
                        hypergrad=None if three is None else three.hypergrad)
        if gradients and three is not None and not three.skipped:
            signal.dots, signal.u_norm = gradients.dots(three.u)
        return signal

    def _float32_hvp(self, loss_fn, params: Vector, extra=None):
        """`hessian_vector_product` with its backward passes in float32 without TF32, as its
        forward (``loss_fn`` runs in float32), averaged over ranks."""
        hvp = hessian_vector_product(loss_fn, params, extra, arithmetic=functools.partial(float32, self.device))
        return lambda v: distributed.mean_(hvp(v))

    def _pretrain_hessian(self, one: LevelOne, at: Vector):
        """H_pt = ∇²_θ Σλ_k L_k at ``at`` on level I's batches of ``one``, averaged over ranks."""
        lam = self.lam.float().to(self.device)
        params = [p.detach().requires_grad_(True) for p in at]
        return self._float32_hvp(lambda: (lam * one.evaluate(params, "float32")).sum(), params)

    def _unrolled_hessians(self, steps: Sequence[InnerStep], t: int):
        """(H_pt at θ_{t-1}, ∇²L_ft at w_{t-1}) of inner step t, for reverse mode (unroll > 1)."""
        one, two = steps[t].pretrain, steps[t].finetune
        params = [p.detach().requires_grad_(True) for p in two.w]
        return self._pretrain_hessian(one, one.theta), self._float32_hvp(lambda: two.finetune_loss(params), params)

    def _implicit_hessians(self, step: InnerStep):
        """HVP closures for H_ft (with the proximal 2γ·I on w_b) and H_pt after the last step."""
        gamma, nb = self.cfg.finetune.gamma, self.n_backbone
        params = [p.detach().requires_grad_(True) for p in self.w_params]
        hvp_ft = self._float32_hvp(
            lambda: step.finetune.finetune_loss(params), params,
            extra=lambda v: [2 * gamma * t for t in v[:nb]] + [torch.zeros_like(t) for t in v[nb:]])
        return hvp_ft, self._pretrain_hessian(step.pretrain, [p.detach() for p in self.theta_params])

    # -- one global step ---------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """``unroll`` × (level I, level II), then level III (every ``reweight.every``-th step; the
        others keep λ and record NaN there); the weighting's step of α from the Signal of the
        three; returns the step's record.

        Each level runs inside a profiler range (``_phase``): ``tapweight.level_I`` / ``_II`` /
        ``_III``, and ``tapweight.hypergradient`` within level III.
        """
        record: dict[str, float] = {"step": self.step_count + 1}  # λ as level I used it
        lam, steps, three = self.lam, [], None
        for inner in range(self.cfg.reweight.unroll if self.learn_weights else 1):
            with self._phase("level_I"):
                one = self.pretrain_step(inner)
            if self.learn_weights:
                with self._phase("level_II"):
                    two = self.finetune_step(inner)
                steps.append(InnerStep(one, two))
                self.reads.defer("finetune_total", two.loss)
        if self.learn_weights and self.step_count % self.cfg.reweight.every == 0:
            with self._phase("level_III"):
                three = self.reweight_step(steps)  # it makes the step's one read
        host = self.reads.host if three else self.reads.read(self.step_count + 1)
        if self.learn_weights:
            record["finetune_loss"] = host["finetune_total"][0]
        record.update(three.values if three else {})
        signal = self.signal(one, three)
        if not signal.skipped and (three is not None or not self.learn_weights):
            alpha = self.state.weighting.update(signal)
            with torch.no_grad():
                self.alpha.copy_(alpha.to(self.alpha))
        record.update(signal.record(self.names))
        record.update({f"loss_{n}": v for n, v in zip(self.names, host["losses"])})
        record.update({f"lambda_{n}": v for n, v in zip(self.names, lam.tolist())})  # α, λ: on the host
        if self.history:  # a step without level III: its columns NaN, in losses.csv's order
            record = {**dict.fromkeys(self.history[-1], math.nan), **record}
        self.state.step += 1
        self.history.append(record)
        return record

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state.load_state_dict(state)
