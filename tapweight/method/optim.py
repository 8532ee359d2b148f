"""Per-level optimizers and schedulers, built once so their param groups stay intact."""

from __future__ import annotations

import math

import torch

from tapweight.config import LevelConfig


def build_optimizer(params, cfg: LevelConfig) -> torch.optim.Optimizer:
    """``params`` may be a list of tensors or of param-group dicts (kept as given)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(cfg: LevelConfig, total_steps: int):
    """The learning-rate multiplier at each step, for ``LambdaLR``."""
    warm = max(cfg.warmup_steps, 0)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.scheduler == "step":
            return cfg.decay ** (step // max(cfg.step_size, 1))
        if cfg.scheduler == "cosine":
            progress = (step - warm) / max(total_steps - warm, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0  # constant, and "warmup" after its warm-up

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: LevelConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first param group's learning rate (the backbone's, by construction)."""
    return float(optimizer.param_groups[0]["lr"])


def preconditioner(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """P with ∂θ'/∂g = −η·diag(P) for the step ``optimizer`` is about to take on ``params``
    (their gradients in ``.grad``, its state still from before the step); hypergrad.py eq. (1).

    SGD: None (P = 1: momentum adds the new gradient as it is, weight decay does not depend
    on it). Adam and AdamW update each entry from its own gradient g, first moment m and
    second moment v; differentiating their update with v's dependence on g included gives,
    with t the step count, s = √(v/(1−β₂ᵗ)) and m, v after the step,

        P = [ (1−β₁)/(s+ε) − m (1−β₂) g / ((1−β₂ᵗ) s (s+ε)²) ] / (1−β₁ᵗ)

    (Adam's L2 weight decay is part of g; AdamW's decoupled decay does not touch g: AdamW is
    recognised by its class).
    A parameter without a gradient is not updated: P = 0.
    """
    if isinstance(optimizer, torch.optim.SGD):
        return None
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    decoupled = isinstance(optimizer, torch.optim.AdamW)  # its class: older torch has no group key for it
    out = []
    for p in params:
        group, state = groups[id(p)], optimizer.state.get(p, {})
        if p.grad is None:
            out.append(torch.zeros_like(p))
            continue
        if group.get("amsgrad") or group.get("maximize"):
            raise ValueError("preconditioner: amsgrad/maximize Adam is not supported")
        (beta1, beta2), eps = group["betas"], group["eps"]
        g = p.grad.detach()
        if group["weight_decay"] and not decoupled:
            g = g + group["weight_decay"] * p.detach()
        t = float(state["step"]) + 1 if "step" in state else 1.0
        m = (1 - beta1) * g if "exp_avg" not in state else beta1 * state["exp_avg"] + (1 - beta1) * g
        v = (1 - beta2) * g * g if "exp_avg_sq" not in state else beta2 * state["exp_avg_sq"] + (1 - beta2) * g * g
        bias2 = 1 - beta2 ** t
        s = (v / bias2).sqrt()
        denom = s + eps
        cross = torch.where(s > 0, m * (1 - beta2) * g / (bias2 * s.clamp_min(torch.finfo(s.dtype).tiny)), 0.0)
        out.append(((1 - beta1) / denom - cross / denom.square()) / (1 - beta1 ** t))
    return out


def loss_scale(scaler: torch.amp.GradScaler, device: torch.device) -> torch.Tensor | float:
    """fp16's loss scale as a device tensor (no host sync), else 1: a gradient the hypergradient
    or a weighting reads is taken of the loss times it, then divided by it (no underflow)."""
    return scaler.scale(torch.ones((), device=device)) if scaler.is_enabled() else 1.0


def scaled_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer,
                device: torch.device) -> torch.Tensor | bool:
    """Step ``optimizer`` through ``scaler`` and release the gradients. Returns whether the
    scaler skipped the step (inf/NaN gradients: it lowered its scale); under fp16 a device
    tensor, so that nothing waits for the device here."""
    before = loss_scale(scaler, device)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return False if not scaler.is_enabled() else loss_scale(scaler, device) < before
