"""The reported number: re-finetune the final θ on the task's train split, select the
epoch with the best validation score, score it on test (as the paper does).

Regression tasks train on standardised targets (`tapweight.method.targets`); their
predictions and metrics are mapped back to the original units here.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tapweight.config import FinalConfig
from tapweight.errors import TapweightError
from tapweight.method.batches import BatchStream, eval_batches, to_device
from tapweight.method.metrics import better, predictions, score, task_loss
from tapweight.method.models import TaskModel
from tapweight.method.optim import build_optimizer, build_scheduler, current_lr
from tapweight.method.targets import TargetScaler
from tapweight.plugin.specs import DomainData, TaskSpec

log = logging.getLogger(__name__)

UNDEFINED = ("the metric is undefined on this split (ROC-AUC needs both classes in a label column, "
             "a correlation needs predictions that vary); try another split (--set split=...)")


@torch.no_grad()
def outputs_and_labels(model: nn.Module, dataset, collate, batch_size: int, device: torch.device,
                       num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's raw outputs (float32, on the CPU) and the labels of every example of
    ``dataset``, in order, in eval mode (the model is left in train mode)."""
    model.eval()
    outputs, labels = [], []
    for x, y in eval_batches(dataset, batch_size, collate, num_workers):
        outputs.append(model(to_device(x, device)).float().cpu())
        labels.append(y)
    model.train()
    return torch.cat(outputs), torch.cat(labels)


def class_probabilities(model: nn.Module, dataset, collate, batch_size: int, device: torch.device,
                        num_workers: int = 0) -> np.ndarray:
    """``[n, C]`` softmax probabilities of a ``ce`` model on every example of ``dataset``."""
    outputs, _ = outputs_and_labels(model, dataset, collate, batch_size, device, num_workers)
    return torch.softmax(outputs, dim=-1).numpy()


def predict(model: nn.Module, dataset, collate, task: TaskSpec, batch_size: int,
            device: torch.device, num_workers: int = 0,
            scaler: TargetScaler | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of every example of ``dataset``, in order; with ``scaler``
    (a regression task trained on standardised targets) both in the original units."""
    outputs, labels = outputs_and_labels(model, dataset, collate, batch_size, device, num_workers)
    preds, y = predictions(task.loss, outputs), labels.numpy()
    if scaler is not None:
        preds, y = scaler.inverse(preds), scaler.inverse(y)
    return preds, y


def evaluate(model: nn.Module, dataset, collate, task: TaskSpec, batch_size: int,
             device: torch.device, num_workers: int = 0,
             scaler: TargetScaler | None = None) -> dict[str, float]:
    """The task's metric and extra metrics on every example of ``dataset``."""
    return scores(task, *predict(model, dataset, collate, task, batch_size, device, num_workers, scaler))


def scores(task: TaskSpec, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metric and its extra metrics."""
    return {m: score(m, preds, labels) for m in (task.metric, *task.extra_metrics)}


def per_label(task: TaskSpec, preds: np.ndarray, labels: np.ndarray, names) -> dict[str, float]:
    """Each of the task's metrics on each label column alone: ``test_<metric>/<label>``
    (a multi-task run's scores per target; the task's metric averages them)."""
    preds = np.asarray(preds).reshape(len(labels), -1)
    return {f"test_{m}/{name}": score(m, preds[:, [t]], labels[:, [t]])
            for m in (task.metric, *task.extra_metrics) for t, name in enumerate(names)}


def refinetune(backbone: nn.Module, make_head: Callable[[], nn.Module], data: DomainData,
               task: TaskSpec, cfg: FinalConfig, device: torch.device, seed: int,
               num_workers: int = 0, on_epoch=None,
               scaler: TargetScaler | None = None) -> tuple[dict[str, float], np.ndarray, TaskModel]:
    """Train a copy of ``backbone`` and a new head for ``cfg.epochs`` epochs; return the val
    and test scores of the epoch with the best validation metric, that model's test
    predictions (in the original units when ``scaler`` is given) and the model itself.

    A training loss or a score that is not finite stops the run with an error saying what
    diverged: a NaN is never reported as a result.
    """
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
        losses = []  # read once per epoch: no host sync inside a step
        for _ in range(per_epoch):
            x, y = to_device(next(stream), device)
            loss = task_loss(task.loss, model(x), y)
            losses.append(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        diverged = [(step, v) for step, v in enumerate(torch.stack(losses).tolist(), 1) if not math.isfinite(v)]
        if diverged:
            step, value = diverged[0]
            raise TapweightError(
                f"the final fine-tune diverged: its training loss is {value} at epoch {epoch}, "
                f"step {step} of {per_epoch}; lower final.lr (now {current_lr(optimizer):g})")
        val = evaluate(model, data.val, data.task_collate, task, cfg.batch_size, device, num_workers,
                       scaler)
        if on_epoch is not None:
            on_epoch(epoch, val[task.metric])
        if better(task.metric, val[task.metric], best):
            best, best_epoch, stale = val[task.metric], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                log.info("final fine-tune stopped early after epoch %d of %d: no better validation %s "
                         "for %d epochs (final.patience); keeping epoch %d", epoch, cfg.epochs, task.metric,
                         stale, best_epoch)
                break
    if best_state is None:
        raise TapweightError(f"the final fine-tune's validation {task.metric} was NaN in every epoch "
                             f"although its training loss stayed finite: {UNDEFINED}")
    model.load_state_dict(best_state)
    preds, labels = predict(model, data.test, data.task_collate, task, cfg.batch_size, device,
                            num_workers, scaler)
    test = scores(task, preds, labels)
    bad = [f"{m} = {v}" for m, v in test.items() if not math.isfinite(v)]
    if bad:
        why = (UNDEFINED if np.isfinite(preds).all() else
               f"some test predictions are not finite; lower final.lr (now {cfg.lr:g})")
        raise TapweightError(f"the final fine-tune's test {', '.join(bad)}: {why}")
    result = {"val": float(best), "test": test[task.metric], "best_epoch": best_epoch}
    result.update({f"test_{m}": v for m, v in test.items() if m != task.metric})
    return result, preds, model
