"""The reported number: re-finetune the final θ on the task's train split, select the
epoch with the best validation score, score it on test (as the paper does)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tapweight.config import FinalConfig
from tapweight.data import BatchStream, eval_batches, to_device
from tapweight.metrics import better, predictions, score, task_loss
from tapweight.models import TaskModel
from tapweight.optim import build_optimizer, build_scheduler
from tapweight.specs import DomainData, TaskSpec

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, collate, task: TaskSpec, batch_size: int,
             device: torch.device, num_workers: int = 0) -> dict[str, float]:
    """The task's metric and extra metrics on every example of ``dataset``."""
    model.eval()
    outputs, labels = [], []
    for x, y in eval_batches(dataset, batch_size, collate, num_workers):
        outputs.append(model(to_device(x, device)).float().cpu())
        labels.append(y)
    model.train()
    out, y = torch.cat(outputs), torch.cat(labels).numpy()
    preds = predictions(task.loss, out)
    return {m: score(m, preds, y) for m in (task.metric, *task.extra_metrics)}


def refinetune(backbone: nn.Module, make_head: Callable[[], nn.Module], data: DomainData,
               task: TaskSpec, cfg: FinalConfig, device: torch.device, seed: int,
               num_workers: int = 0, on_epoch=None) -> dict[str, float]:
    """Train a copy of ``backbone`` and a new head for ``cfg.epochs`` epochs; return val and
    test scores of the epoch with the best validation metric."""
    torch.manual_seed(seed)
    model = TaskModel(copy.deepcopy(backbone), make_head()).to(device)
    stream = BatchStream(data.train, cfg.batch_size, data.task_collate, seed, num_workers)
    per_epoch = max(len(data.train) // stream.batch_size, 1)
    params = [{"params": list(model.backbone.parameters())}, {"params": list(model.head.parameters())}]
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg, cfg.epochs * per_epoch)
    best, best_state, best_epoch, stale = None, None, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()  # whatever the loader returned (from_pretrained: eval, no dropout)
        for _ in range(per_epoch):
            x, y = to_device(next(stream), device)
            loss = task_loss(task.loss, model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        val = evaluate(model, data.val, data.task_collate, task, cfg.batch_size, device, num_workers)
        if on_epoch is not None:
            on_epoch(epoch, val[task.metric])
        if better(task.metric, val[task.metric], best):
            best, best_epoch, stale = val[task.metric], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                break
    if best_state is None:
        log.warning("validation %s was NaN in every epoch; scoring the last epoch", task.metric)
    else:
        model.load_state_dict(best_state)
    test = evaluate(model, data.test, data.task_collate, task, cfg.batch_size, device, num_workers)
    result = {"val": float(np.nan if best is None else best), "test": test[task.metric],
              "best_epoch": best_epoch}
    result.update({f"test_{m}": v for m, v in test.items() if m != task.metric})
    return result
