"""The largest stable step of a squared loss on the backbone's features: ``python -m bench curvature``.

Levels II and the final fine-tune put a linear head on the backbone's features f. For MSE
the Hessian in the head's weights and bias is H = 2·E[f̃ f̃ᵀ] with f̃ = (f, 1), whatever the
targets are; SGD with momentum β is stable on it only while lr · λ_max(H) < 2(1 + β)
(heavy-ball on a quadratic). The command builds the task's backbone exactly as
``tapweight run`` does (config, data, split, ``--set init=...``), takes the features of a
few training batches in training mode (batch statistics, as in training) and prints
λ_max(H), that bound, and the configured ``finetune.lr`` and ``final.lr`` beside it.
"""

from __future__ import annotations

import torch

from tapweight.job.runner import resolve
from tapweight.job.seed import seed_everything, split_table
from tapweight.method.batches import BatchStream


def head_hessian(features: torch.Tensor) -> torch.Tensor:
    """H = 2·E[f̃ f̃ᵀ] ``[D+1, D+1]``: the Hessian of mean (w·f + b − y)² in (w, b)."""
    f = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    return 2 * f.T @ f / len(f)


def stable_lr(top_eigenvalue: float, momentum: float) -> float:
    """The largest SGD learning rate with ``momentum`` that does not diverge on H."""
    return 2 * (1 + momentum) / top_eigenvalue


@torch.no_grad()
def run(domain: str, task: str, data: str, sets: list[str], batches: int) -> dict:
    job = resolve(domain, task, "cpu", options={"data": data}, sets=sets)
    cfg = job.cfg
    table = job.registry.get("datasets", job.task.dataset, domain).load(cfg)
    split = split_table(job, cfg, table)
    seed_everything(cfg.seed)
    built = job.domain.build_data(cfg, table, split, job.task)
    backbone = job.registry.get("backbones", cfg.backbone or job.domain.backbone, domain).build(cfg, built)
    backbone.train()  # batch statistics, as levels II and the final fine-tune see them
    stream = BatchStream(built.train, cfg.finetune.batch_size, built.task_collate, cfg.seed)
    features = torch.cat([backbone(next(stream)[0]) for _ in range(batches)])  # [n, D]
    top = float(torch.linalg.eigvalsh(head_hessian(features))[-1])
    levels = {}
    for name in ("finetune", "final"):
        level = getattr(cfg, name)
        momentum = level.momentum if level.optimizer == "sgd" else float("nan")
        levels[name] = {"optimizer": level.optimizer, "lr": level.lr, "momentum": momentum,
                        "stable_lr": stable_lr(top, momentum) if level.optimizer == "sgd" else None}
    return {"command": "curvature", "domain": domain, "task": task, "sets": sets,
            "examples": len(features), "mean_sq_feature_norm": float(features.pow(2).sum(1).mean()),
            "top_eigenvalue": top, "levels": levels,
            "note": "stable_lr only for SGD: Adam's step does not scale with the curvature"
            if any(v["stable_lr"] is None for v in levels.values()) else ""}

