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
