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

Each level I/II step records what the hypergradient needs (:class:`~tapweight.method.hypergrad.InnerStep`:
θ before the step, its batches, the rates the optimizers used and, for Adam, their
preconditioners); level III consumes the records of its ``unroll`` steps. A step that AMP's
GradScaler skips (inf/NaN gradients) leaves θ' = θ or w' = w, so its level III is skipped too.
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
from tapweight.method.hypergrad import InnerStep, Precision, Problem, Vector, hessian_vector_product
from tapweight.method.metrics import best_offset, overconfidence, task_loss
from tapweight.method.models import PretrainModel, TaskModel, backbone_params, float32, frozen_running_stats, replay_rng
from tapweight.method.optim import build_optimizer, build_scheduler, current_lr, preconditioner
from tapweight.method.weightings import Signal, Weighting, default_weighting
from tapweight.method.weightings.gradients import ObjectiveGradients

log = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NonFiniteLoss(TapweightError):
    """A loss became NaN or infinite at global step ``step``. The message names the value
    and the learning rate to lower; the runner adds whether a checkpoint was kept."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


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
        self.weighting = weighting or default_weighting(cfg, learn_weights, initial_weights)
        self.learn_weights = learn_weights = self.weighting.learns
        if learn_weights and cfg.reweight.val_loss == "offset_free" and loss_kind != "bce":
            raise TapweightError(f"reweight.val_loss=offset_free refits the offset of binary labels: this task's "
                                 f"loss is {loss_kind}; use reweight.val_loss=plain")
        self.names = [n.split(".", 1)[-1] for n in pretrain_model.names]
        # α lives on the host: the weightings update it there, λ goes to the device without a sync
        self.alpha = torch.nn.Parameter(self.weighting.start_logits(pretrain_model.names).float())

        named = [(n, p) for n, p in self.theta.named_parameters() if p.requires_grad]
        self.theta_names = [n for n, _ in named]
        self.theta_params = [p for _, p in named]
        self.n_backbone = sum(n.startswith("backbone.") for n in self.theta_names)
        self.w_backbone = backbone_params(self.w)
        w_named = [(n, p) for n, p in self.w.named_parameters() if p.requires_grad]
        self.w_names = ([n for n, _ in w_named if n.startswith("backbone.")]
                        + [n for n, _ in w_named if n.startswith("head.")])
        self.w_params = self.w_backbone + [p for p in self.w.head.parameters() if p.requires_grad]
        if self.n_backbone != len(self.w_backbone):
            raise ValueError("θ and w backbones differ: the proximal term needs the same parameters")
        self.gradients = ObjectiveGradients.of(self.weighting, self.theta_names, self.theta_params, self.n_backbone)

        steps, unroll = cfg.steps, cfg.reweight.unroll
        self.opt_pretrain = build_optimizer(self.theta_params, cfg.pretrain)
        self.opt_finetune = build_optimizer(
            [{"params": self.w_backbone}, {"params": self.w_params[self.n_backbone:]}], cfg.finetune)
        every = cfg.reweight.every  # level III on every k-th step, α's rate × k
        self.opt_reweight = build_optimizer([self.alpha], dataclasses.replace(cfg.reweight, lr=cfg.reweight.lr * every))
        self.sched_pretrain = build_scheduler(self.opt_pretrain, cfg.pretrain, steps * unroll)
        self.sched_finetune = build_scheduler(self.opt_finetune, cfg.finetune, steps * unroll)
        self.sched_reweight = build_scheduler(self.opt_reweight, cfg.reweight, max(1, steps // every))

        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.hypergrad = estimators.build(cfg, device)  # reweight.hypergrad, auto resolved (estimators.py)
        self.scaler_pretrain = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.scaler_finetune = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

        self.step_count, self._losses, self._eta_pretrain = 0, torch.zeros(len(self.names)), 0.0  # for Signal.of
        self.history: list[dict[str, float]] = []
        self._steps: list[InnerStep] = []  # this global step's level I/II records, for level III
        self._level_one: dict = {}  # the current level I step's part of its record
        self._skipped: torch.Tensor | bool = False  # GradScaler skipped a level I/II step (fp16: on the device)
        self._pending: list[tuple] = []  # device values for the step's one read (_read)
        self._host: dict[str, list[float]] = {}  # what the last read returned
        self._inner = 0  # which of the step's `unroll` level I/II steps is running (for seeds)
        self.phase_times: dict[str, float] | None = None  # set to {} to time each level (_phase)

    # -- helpers -----------------------------------------------------------------------------
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

    def _defer(self, key: str, values: torch.Tensor, what: Sequence[str] = (), advice: str = "") -> None:
        """Queue ``values`` (on the device) for the step's one read; with ``advice``, the read
        checks them finite (``what`` names each) and raises NonFiniteLoss otherwise."""
        self._pending.append((key, values.detach().double().reshape(-1), what, advice))

    def _read(self) -> dict[str, list[float]]:
        """The global step's one host synchronisation: every queued value in one transfer, then
        the finite checks in the order they were queued (level I's losses first). Returns key →
        values, kept in ``self._host``."""
        pending, self._pending = self._pending, []
        if pending:
            flat = torch.cat([v.to(self.device) for _, v, _, _ in pending]).tolist()  # the sync
            start = 0
            for key, values, what, advice in pending:
                self._host[key] = read = flat[start:start + len(values)]
                start += len(values)
                if key == "losses":  # level I's L(θ), for Signal.of
                    self._losses = torch.tensor(read, dtype=torch.float64)
                bad = [f"{name} = {v}" for name, v in zip(what, read) if advice and not math.isfinite(v)]
                if bad and not (key == "hypergrad" and self._host.get("skipped", [0])[0]):
                    step = self.step_count + 1
                    raise NonFiniteLoss(f"non-finite loss at step {step} ({'; '.join(bad)}): {advice}", step)
        return self._host

    def _loss_scale(self, scaler: torch.amp.GradScaler) -> torch.Tensor | float:
        """fp16's loss scale (a device tensor: no sync), by which a gradient the hypergradient or
        a weighting reads is taken and then divided, so that small ones do not underflow; else 1."""
        return scaler.scale(torch.ones((), device=self.device)) if scaler.is_enabled() else 1.0

    def _optimizer_step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor | bool:
        """Step ``optimizer`` through ``scaler``, release the gradients; under fp16 a device
        tensor, True if the scaler skipped the step (inf/NaN gradients: it lowered its scale)."""
        before = self._loss_scale(scaler)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return False if not scaler.is_enabled() else self._loss_scale(scaler) < before

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
    def pretrain_step(self) -> torch.Tensor:
        """One step of θ on Σ_k λ_k L_k, accumulated over ``pretrain.accumulate`` batches."""
        accumulate, r = self.cfg.pretrain.accumulate, self.cfg.reweight
        self.theta.train()
        theta_before = [p.detach().clone() for p in self.theta_params] if self.learn_weights else []
        lam = self.lam.float().to(self.device, non_blocking=True)
        batches, total = [], torch.zeros(len(self.names), device=self.device)
        for i in range(accumulate):
            batch = to_device(next(self.corpus), self.device)
            seed = self._seed(1, self._inner * accumulate + i)
            sync = i == accumulate - 1 or self.theta_ddp is self.theta  # all-reduce once, at the end
            with (contextlib.nullcontext() if sync else self.theta_ddp.no_sync()):
                with replay_rng(seed, self.device), self._autocast():
                    losses = self.theta_ddp(batch)  # [K], unweighted
                if self.gradients:  # each ∇L_k apart, through the graph the backward then uses
                    self.gradients.add(losses, i, accumulate, self._loss_scale(self.scaler_pretrain))
                self.scaler_pretrain.scale((lam * losses).sum() / accumulate).backward()
            total += losses.detach() / accumulate
            batches.append((batch, seed))
        local = total.clone()  # this process's L(θ), before the all-reduce
        distributed.mean_([total])
        eta = self._eta_pretrain = current_lr(self.opt_pretrain)
        self._defer("losses", total, [f"objective {n}" for n in self.names],
                    f"lower pretrain.lr (now {eta:g}) or check the data")
        precondition = None
        if self.learn_weights:
            self.scaler_pretrain.unscale_(self.opt_pretrain)
            precondition = self._precondition(self.opt_pretrain, self.theta_params[:self.n_backbone])
        self._skipped = self._skipped | self._optimizer_step(self.scaler_pretrain, self.opt_pretrain)
        self.sched_pretrain.step()
        if self.learn_weights:
            hyper = [(head_of_batch(b, r.hyper_fraction), s) for b, s in batches]
            group = self.opt_pretrain.param_groups[0]
            self._level_one = dict(
                theta=theta_before, losses=functools.partial(self.losses, hyper), eta_pretrain=eta,
                precondition_pretrain=precondition,
                losses_at_theta=local,
                momentum_pretrain=group.get("momentum", 0.0), decay_pretrain=group["weight_decay"])
        self._losses = total.detach()
        return total

    # -- level II ----------------------------------------------------------------------------
    def finetune_loss(self, x, y, seed: int, model=None) -> torch.Tensor:
        with replay_rng(seed, self.device), self._autocast():
            return task_loss(self.loss_kind, (model or self.w)(x), y)

    def finetune_step(self) -> torch.Tensor:
        """One step of w on L_ft + γ‖w_b − θ_b‖²; the proximal gradient is added in closed form.
        Returns that objective's value (on the device)."""
        gamma, unrolled = self.cfg.finetune.gamma, self.cfg.reweight.unroll > 1
        self.w.train()
        w_before = [p.detach().clone() for p in self.w_params] if unrolled else None
        x, y = to_device(next(self.train), self.device)
        seed = self._seed(2, self._inner)
        loss = self.finetune_loss(x, y, seed, self.w_ddp)
        self._defer("finetune_loss", loss, ["the fine-tuning loss"],
                    f"lower finetune.lr (now {current_lr(self.opt_finetune):g}) or check the labels")
        self.scaler_finetune.scale(loss).backward()
        self.scaler_finetune.unscale_(self.opt_finetune)
        with torch.no_grad():
            diff = torch._foreach_sub([p.detach() for p in self.w_backbone],
                                      [p.detach() for p in self.theta_params[:self.n_backbone]])
            for p, d in zip(self.w_backbone, diff):  # ∇ γ‖w_b − θ_b‖² = 2γ (w_b − θ_b)
                p.grad = 2 * gamma * d if p.grad is None else p.grad.add_(d, alpha=2 * gamma)
            proximal = gamma * torch.stack(torch._foreach_norm(diff)).double().pow(2).sum()
        eta = current_lr(self.opt_finetune)
        precondition = self._precondition(self.opt_finetune, self.w_backbone)
        self._skipped = self._skipped | self._optimizer_step(self.scaler_finetune, self.opt_finetune)
        self.sched_finetune.step()
        group = self.opt_finetune.param_groups[0]
        self._steps.append(InnerStep(
            **self._level_one, eta_finetune=eta, precondition_finetune=precondition, w=w_before,
            finetune_loss=functools.partial(self._finetune_loss_at, x, y, seed),
            momentum_finetune=group.get("momentum", 0.0), decay_finetune=group["weight_decay"]))
        return loss.detach() + proximal

    def _finetune_loss_at(self, x, y, seed: int, params: Vector) -> torch.Tensor:
        """L_ft at w's parameters replaced by ``params``, in float32, statistics untouched."""
        replaced = dict(zip(self.w_names, params))
        with frozen_running_stats(self.w), float32(self.device), replay_rng(seed, self.device):
            return task_loss(self.loss_kind, torch.func.functional_call(self.w, replaced, (x,)), y)

    # -- level III ---------------------------------------------------------------------------
    def reweight_step(self) -> tuple[dict[str, float], Signal]:
        """Level III: u = ∇_w L_val(w'), the Signal the weighting reads from it (the hypergradient,
        cosines), its step of α. Returns ``val_loss``, ``val_overconfidence`` and the Signal.
        The step's one read (:meth:`_read`) happens here, before the weighting's step."""
        steps, self._steps = self._steps, []
        skipped, self._skipped = self._skipped, False
        x, y = to_device(next(self.val), self.device)
        with frozen_running_stats(self.w), replay_rng(self._seed(3), self.device), self._autocast():
            outputs = self.w(x)
            if self.cfg.reweight.val_loss == "offset_free":
                outputs = outputs + best_offset(outputs, y)
            val_loss = task_loss(self.loss_kind, outputs, y)
        mean_loss, mean_overconfidence = distributed.mean_(
            [val_loss.detach().float(), overconfidence(self.loss_kind, outputs, y)])
        self._defer("values", torch.stack([mean_loss.double(), mean_overconfidence.double()]))
        if skipped is True:
            skipped = torch.ones((), dtype=torch.bool, device=self.device)
        if skipped is not False:
            self._defer("skipped", skipped)
        # under fp16 a skipped level I/II step (θ' = θ or w' = w) is known after the read: then
        # L_val(w') does not depend on λ through this step, the hypergradient is 0, λ stays
        scale = self._loss_scale(self.scaler_finetune)
        u = torch.autograd.grad(val_loss * scale, self.w_params, allow_unused=True)  # scaled, then unscaled
        u = distributed.mean_([torch.zeros_like(p) if g is None else g.detach() / scale
                               for p, g in zip(self.w_params, u)])
        if self.weighting.hypergradient:
            problem = Problem(steps=steps, u=u, gamma=self.cfg.finetune.gamma, n_backbone=self.n_backbone,
                              theta_after=[p.detach() for p in self.theta_params])
            with self._phase("hypergradient"):
                if self.hypergrad.needs_hessians:
                    problem.hvp_finetune, problem.hvp_pretrain = self._implicit_hessians(steps[-1])
                g_lam = self.hypergrad(problem, functools.partial(self._unrolled_hessians, steps))
                g_lam = distributed.mean_([g_lam])[0]  # this rank's shard -> global mean
            self._defer("hypergrad", g_lam, ["the hypergradient"] * len(self.names),  # w diverged, or α's
                        f"lower finetune.lr (now {current_lr(self.opt_finetune):g}) or reweight.lr "  # steps too large
                        f"(now {current_lr(self.opt_reweight):g})")
        host = self._read()
        values = dict(zip(("val_loss", "val_overconfidence"), host["values"]))
        if host.pop("skipped", [0.0])[0]:
            log.info("step %d: GradScaler skipped a level I/II step (inf/NaN gradients): λ stays", self.step_count + 1)
            return values, Signal.of(self, skipped=True)
        signal = Signal.of(self, u=u)
        if self.weighting.hypergradient:
            signal.hypergrad = torch.tensor(host["hypergrad"], dtype=torch.float64)
        return values, self.weighting.apply(signal)

    def _float32_hvp(self, loss_fn, params: Vector, extra=None):
        """:func:`hessian_vector_product` with its backward and each double-backward in float32
        without TF32, as its forward (``loss_fn`` runs in float32), averaged over ranks."""
        with float32(self.device):
            hvp = hessian_vector_product(loss_fn, params, extra)

        def product(v: Vector) -> Vector:
            with float32(self.device):
                return distributed.mean_(hvp(v))

        return product

    def _level_one_hessian(self, step: InnerStep, at: Vector):
        """H_pt = ∇²_θ Σλ_k L_k at ``at`` on ``step``'s level I batches, averaged over ranks."""
        lam = self.lam.float().to(self.device)
        params = [p.detach().requires_grad_(True) for p in at]
        return self._float32_hvp(lambda: (lam * step.losses(params, "float32")).sum(), params)

    def _unrolled_hessians(self, steps: list[InnerStep], t: int):
        """(H_pt at θ_{t-1}, ∇²L_ft at w_{t-1}) of inner step t, for reverse mode (unroll > 1)."""
        step = steps[t]
        params = [p.detach().requires_grad_(True) for p in step.w]
        return (self._level_one_hessian(step, step.theta),
                self._float32_hvp(lambda: step.finetune_loss(params), params))

    def _implicit_hessians(self, step: InnerStep):
        """HVP closures for H_ft (with the proximal 2γ·I on w_b) and H_pt after the last step."""
        gamma, nb = self.cfg.finetune.gamma, self.n_backbone
        params = [p.detach().requires_grad_(True) for p in self.w_params]
        hvp_ft = self._float32_hvp(
            lambda: step.finetune_loss(params), params,
            extra=lambda v: [2 * gamma * t for t in v[:nb]] + [torch.zeros_like(t) for t in v[nb:]])
        return hvp_ft, self._level_one_hessian(step, [p.detach() for p in self.theta_params])

    # -- one global step ---------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """``unroll`` × (level I, level II), then level III; returns the step's record.

        Each level runs inside a profiler range (``_phase``): ``tapweight.level_I`` / ``_II`` /
        ``_III``, and ``tapweight.hypergradient`` within level III.
        """
        record: dict[str, float] = {"step": self.step_count + 1}  # λ as level I used it
        lam = self.lam
        for inner in range(self.cfg.reweight.unroll if self.learn_weights else 1):
            self._inner = inner
            with self._phase("level_I"):
                self.pretrain_step()
            if self.learn_weights:
                with self._phase("level_II"):
                    record["finetune_loss"] = math.nan  # read below
                    self._defer("finetune_total", self.finetune_step())
        if self.learn_weights and self.step_count % self.cfg.reweight.every == 0:
            with self._phase("level_III"):
                values, signal = self.reweight_step()
            record.update(values)
        else:  # reweight.every: no level III this step, λ stays
            self._read()  # the step's one sync (level III makes it itself)
            self._steps.clear()
            signal = Signal.of(self)
            if not self.learn_weights:
                signal = self.weighting.apply(signal)
        host = self._host
        if "finetune_loss" in record:
            record["finetune_loss"] = host["finetune_total"][0]
        record.update(signal.record(self.names))
        record.update({f"loss_{n}": v for n, v in zip(self.names, host["losses"])})
        record.update({f"lambda_{n}": v for n, v in zip(self.names, lam.tolist())})  # α, λ: on the host
        if self.history:  # a step without level III: its columns NaN, in losses.csv's order
            record = {**dict.fromkeys(self.history[-1], math.nan), **record}
        self.step_count += 1
        self.history.append(record)
        return record

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpointed(self) -> tuple:
        """(key, objects) of the optimizers, schedulers and scalers a checkpoint holds."""
        return (("optimizers", (self.opt_pretrain, self.opt_finetune, self.opt_reweight)),
                ("schedulers", (self.sched_pretrain, self.sched_finetune, self.sched_reweight)),
                ("scalers", (self.scaler_pretrain, self.scaler_finetune)))

    def state_dict(self) -> dict:
        streams = {"corpus": self.corpus, "train": self.train, "val": self.val}
        return {"step": self.step_count, "history": self.history, "alpha": self.alpha.detach().cpu(),
                "theta": self.theta.state_dict(), "w": self.w.state_dict(),
                **{key: [o.state_dict() for o in objects] for key, objects in self._checkpointed()},
                "streams": {k: s.state_dict() for k, s in streams.items() if s is not None},
                "weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step_count, self.history = state["step"], list(state["history"])
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self.theta.load_state_dict(state["theta"])
        self.w.load_state_dict(state["w"])
        for key, objects in self._checkpointed():
            for obj, s in zip(objects, state[key]):
                obj.load_state_dict(s)
        streams = {"corpus": self.corpus, "train": self.train, "val": self.val}
        for key, s in state["streams"].items():
            streams[key].load_state_dict(s)
        self.weighting.load_state_dict(state.get("weighting", {}))  # older checkpoints: static rules
