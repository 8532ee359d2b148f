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

Each level I/II step records what the hypergradient needs (`InnerStep`:
θ before the step, its batches, the rates the optimizers used and, for Adam, their
preconditioners); level III consumes the records of its ``unroll`` steps. A step that AMP's
GradScaler skips (inf/NaN gradients) leaves θ' = θ or w' = w, so its level III is skipped too.
"""

from __future__ import annotations

import contextlib
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
        self.alpha = torch.nn.Parameter(self.weighting.start_logits(pretrain_model.names).float().to(device))

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
        self.opt_reweight = build_optimizer([self.alpha], cfg.reweight)
        self.sched_pretrain = build_scheduler(self.opt_pretrain, cfg.pretrain, steps * unroll)
        self.sched_finetune = build_scheduler(self.opt_finetune, cfg.finetune, steps * unroll)
        self.sched_reweight = build_scheduler(self.opt_reweight, cfg.reweight, steps)

        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.hypergrad = estimators.build(cfg, device)  # reweight.hypergrad, auto resolved (estimators.py)
        self.scaler_pretrain = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.scaler_finetune = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

        self.step_count, self._losses, self._eta_pretrain = 0, torch.zeros(len(self.names)), 0.0  # for Signal.of
        self.history: list[dict[str, float]] = []
        self._steps: list[InnerStep] = []  # this global step's level I/II records, for level III
        self._level_one: dict = {}  # the current level I step's part of its record
        self._skipped = False  # GradScaler skipped a level I/II step of this global step
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

    def _check_finite(self, values: torch.Tensor, what: Sequence[str], advice: str) -> None:
        bad = [f"{name} = {v}" for name, v in zip(what, values.tolist()) if not math.isfinite(v)]
        if bad:
            step = self.step_count + 1
            raise NonFiniteLoss(f"non-finite loss at step {step} ({'; '.join(bad)}): {advice}", step)

    def _optimizer_step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer`` through ``scaler``, release the gradients; False if the scaler
        skipped the step (inf/NaN gradients under fp16)."""
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return scale is None or scaler.get_scale() >= scale

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
        float32 without TF32 (a central difference needs every digit), with TF32 as torch allows
        it (jvp, which differentiates directly), or exactly as level I ran (``level_one``: the
        run's autocast, for a difference against level I's own losses)."""
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
        lam = self.lam.float().to(self.device)
        batches, total = [], torch.zeros(len(self.names), device=self.device)
        for i in range(accumulate):
            batch = to_device(next(self.corpus), self.device)
            seed = self._seed(1, self._inner * accumulate + i)
            sync = i == accumulate - 1 or self.theta_ddp is self.theta  # all-reduce once, at the end
            with (contextlib.nullcontext() if sync else self.theta_ddp.no_sync()):
                with replay_rng(seed, self.device), self._autocast():
                    losses = self.theta_ddp(batch)  # [K], unweighted
                if self.gradients:  # each ∇L_k apart, through the graph the backward then uses
                    self.gradients.add(losses, i, accumulate)
                self.scaler_pretrain.scale((lam * losses).sum() / accumulate).backward()
            total += losses.detach() / accumulate
            batches.append((batch, seed))
        local = total.clone()  # this process's L(θ), before the all-reduce
        distributed.mean_([total])
        eta = self._eta_pretrain = current_lr(self.opt_pretrain)
        self._check_finite(total, [f"objective {n}" for n in self.names],
                           f"lower pretrain.lr (now {eta:g}) or check the data")
        precondition = None
        if self.learn_weights:
            self.scaler_pretrain.unscale_(self.opt_pretrain)
            precondition = self._precondition(self.opt_pretrain, self.theta_params[:self.n_backbone])
        if not self._optimizer_step(self.scaler_pretrain, self.opt_pretrain):
            self._skipped = True
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

    def finetune_step(self) -> float:
        """One step of w on L_ft + γ‖w_b − θ_b‖²; the proximal gradient is added in closed form."""
        gamma, unrolled = self.cfg.finetune.gamma, self.cfg.reweight.unroll > 1
        self.w.train()
        w_before = [p.detach().clone() for p in self.w_params] if unrolled else None
        x, y = to_device(next(self.train), self.device)
        seed = self._seed(2, self._inner)
        loss = self.finetune_loss(x, y, seed, self.w_ddp)
        self._check_finite(loss.detach().reshape(1), ["the fine-tuning loss"],
                           f"lower finetune.lr (now {current_lr(self.opt_finetune):g}) or check the labels")
        self.scaler_finetune.scale(loss).backward()
        self.scaler_finetune.unscale_(self.opt_finetune)
        with torch.no_grad():
            diff = torch._foreach_sub([p.detach() for p in self.w_backbone],
                                      [p.detach() for p in self.theta_params[:self.n_backbone]])
            for p, d in zip(self.w_backbone, diff):  # ∇ γ‖w_b − θ_b‖² = 2γ (w_b − θ_b)
                p.grad = 2 * gamma * d if p.grad is None else p.grad.add_(d, alpha=2 * gamma)
            proximal = gamma * float(torch.stack(torch._foreach_norm(diff)).double().pow(2).sum())
        eta = current_lr(self.opt_finetune)
        precondition = self._precondition(self.opt_finetune, self.w_backbone)
        if not self._optimizer_step(self.scaler_finetune, self.opt_finetune):
            self._skipped = True
        self.sched_finetune.step()
        group = self.opt_finetune.param_groups[0]
        self._steps.append(InnerStep(
            **self._level_one, eta_finetune=eta, precondition_finetune=precondition, w=w_before,
            finetune_loss=functools.partial(self._finetune_loss_at, x, y, seed),
            momentum_finetune=group.get("momentum", 0.0), decay_finetune=group["weight_decay"]))
        return float(loss.detach()) + proximal

    def _finetune_loss_at(self, x, y, seed: int, params: Vector) -> torch.Tensor:
        """L_ft at w's parameters replaced by ``params``, in float32, statistics untouched."""
        replaced = dict(zip(self.w_names, params))
        with frozen_running_stats(self.w), float32(self.device), replay_rng(seed, self.device):
            return task_loss(self.loss_kind, torch.func.functional_call(self.w, replaced, (x,)), y)

    # -- level III ---------------------------------------------------------------------------
    def reweight_step(self) -> tuple[dict[str, float], Signal]:
        """Level III: u = ∇_w L_val(w'), the Signal the weighting reads from it (the hypergradient,
        cosines), its step of α. Returns ``val_loss``, ``val_overconfidence`` and the Signal."""
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
        values = {"val_loss": float(mean_loss), "val_overconfidence": float(mean_overconfidence)}
        if skipped:  # θ' = θ or w' = w: L_val(w') does not depend on λ through this step (hypergrad: 0)
            log.info("step %d: GradScaler skipped a level I/II step (inf/NaN gradients): λ stays", self.step_count + 1)
            return values, Signal.of(self, skipped=True)
        u = torch.autograd.grad(val_loss, self.w_params, allow_unused=True)
        u = distributed.mean_([torch.zeros_like(p) if g is None else g.detach() for p, g in zip(self.w_params, u)])
        signal = Signal.of(self, u=u)
        if self.weighting.hypergradient:
            problem = Problem(steps=steps, u=u, gamma=self.cfg.finetune.gamma, n_backbone=self.n_backbone,
                              theta_after=[p.detach() for p in self.theta_params])
            with self._phase("hypergradient"):
                if self.hypergrad.needs_hessians:
                    problem.hvp_finetune, problem.hvp_pretrain = self._implicit_hessians(steps[-1])
                g_lam = self.hypergrad(problem, functools.partial(self._unrolled_hessians, steps))
                g_lam = distributed.mean_([g_lam])[0]  # this rank's shard -> global mean
            self._check_finite(g_lam.float(), ["the hypergradient"],  # w diverged, or α's steps are too large
                               f"lower finetune.lr (now {current_lr(self.opt_finetune):g}) or reweight.lr "
                               f"(now {current_lr(self.opt_reweight):g})")
            signal.hypergrad = g_lam.detach().double().cpu()
        return values, self.weighting.apply(signal)

    def _level_one_hessian(self, step: InnerStep, at: Vector):
        """H_pt = ∇²_θ Σλ_k L_k at ``at`` on ``step``'s level I batches, averaged over ranks."""
        lam = self.lam.float().to(self.device)
        params = [p.detach().requires_grad_(True) for p in at]
        hvp = hessian_vector_product(lambda: (lam * step.losses(params, "float32")).sum(), params)
        return lambda v: distributed.mean_(hvp(v))

    def _unrolled_hessians(self, steps: list[InnerStep], t: int):
        """(H_pt at θ_{t-1}, ∇²L_ft at w_{t-1}) of inner step t, for reverse mode (unroll > 1)."""
        step = steps[t]
        params = [p.detach().requires_grad_(True) for p in step.w]
        hvp_ft = hessian_vector_product(lambda: step.finetune_loss(params), params)
        return self._level_one_hessian(step, step.theta), lambda v: distributed.mean_(hvp_ft(v))

    def _implicit_hessians(self, step: InnerStep):
        """HVP closures for H_ft (with the proximal 2γ·I on w_b) and H_pt after the last step."""
        gamma, nb = self.cfg.finetune.gamma, self.n_backbone
        params = [p.detach().requires_grad_(True) for p in self.w_params]
        hvp_ft = hessian_vector_product(
            lambda: step.finetune_loss(params), params,
            extra=lambda v: [2 * gamma * t for t in v[:nb]] + [torch.zeros_like(t) for t in v[nb:]])
        return (lambda v: distributed.mean_(hvp_ft(v)),
                self._level_one_hessian(step, [p.detach() for p in self.theta_params]))

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
                losses = self.pretrain_step()
            if self.learn_weights:
                with self._phase("level_II"):
                    record["finetune_loss"] = self.finetune_step()
        if self.learn_weights:
            with self._phase("level_III"):
                values, signal = self.reweight_step()
            record.update(values)
        else:
            signal = self.weighting.apply(Signal.of(self))
        record.update(signal.record(self.names))
        record.update({f"loss_{n}": float(v) for n, v in zip(self.names, losses)})
        record.update({f"lambda_{n}": float(v) for n, v in zip(self.names, lam)})
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
            self.alpha.copy_(state["alpha"].to(self.device))
        self.theta.load_state_dict(state["theta"])
        self.w.load_state_dict(state["w"])
        for key, objects in self._checkpointed():
            for obj, s in zip(objects, state[key]):
                obj.load_state_dict(s)
        streams = {"corpus": self.corpus, "train": self.train, "val": self.val}
        for key, s in state["streams"].items():
            streams[key].load_state_dict(s)
        self.weighting.load_state_dict(state.get("weighting", {}))  # older checkpoints: static rules
