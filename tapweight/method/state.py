"""What survives a global step of the engine, in one object: the checkpoint is its state dict.

θ and w, the batch streams (where each is in its epoch), the logits α, each level's optimizer
and scheduler, fp16's GradScalers of levels I and II, the weighting (whose ``state_dict`` holds
what its rule keeps), the steps taken and their records. What one step hands the next level
is in method/levels.py, and lives no longer than the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tapweight.method.weightings import AlphaOptimizer, Weighting


@dataclass
class State:
    """The engine's cross-step state (module docstring); ``streams`` maps ``corpus``, ``train``
    and ``val`` to their batch streams (None for a level that does not run)."""

    theta: torch.nn.Module
    w: torch.nn.Module
    streams: dict[str, Any]
    alpha: torch.nn.Parameter
    weighting: Weighting
    opt_pretrain: torch.optim.Optimizer
    opt_finetune: torch.optim.Optimizer
    opt_reweight: torch.optim.Optimizer
    sched_pretrain: torch.optim.lr_scheduler.LRScheduler
    sched_finetune: torch.optim.lr_scheduler.LRScheduler
    sched_reweight: torch.optim.lr_scheduler.LRScheduler
    scaler_pretrain: torch.amp.GradScaler
    scaler_finetune: torch.amp.GradScaler
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def reweight(self) -> AlphaOptimizer:
        """α with level III's optimizer and scheduler, as a weighting steps it."""
        return AlphaOptimizer(self.alpha, self.opt_reweight, self.sched_reweight)

    def _checkpointed(self) -> tuple:
        """(key, objects) of the optimizers, schedulers and scalers a checkpoint holds."""
        return (("optimizers", (self.opt_pretrain, self.opt_finetune, self.opt_reweight)),
                ("schedulers", (self.sched_pretrain, self.sched_finetune, self.sched_reweight)),
                ("scalers", (self.scaler_pretrain, self.scaler_finetune)))

    def state_dict(self) -> dict:
        return {"step": self.step, "history": self.history, "alpha": self.alpha.detach().cpu(),
                "theta": self.theta.state_dict(), "w": self.w.state_dict(),
                **{key: [o.state_dict() for o in objects] for key, objects in self._checkpointed()},
                "streams": {k: s.state_dict() for k, s in self.streams.items() if s is not None},
                "weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.history = state["step"], list(state["history"])
        with torch.no_grad():
            self.alpha.copy_(state["alpha"].to(self.alpha.device))
        self.theta.load_state_dict(state["theta"])
        self.w.load_state_dict(state["w"])
        for key, objects in self._checkpointed():
            for obj, s in zip(objects, state[key]):
                obj.load_state_dict(s)
        for key, s in state["streams"].items():
            self.streams[key].load_state_dict(s)
        self.weighting.load_state_dict(state.get("weighting", {}))  # older checkpoints: static rules
