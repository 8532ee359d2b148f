"""Task losses and metrics, with missing labels (NaN) masked in both.

Loss kinds: ``bce`` (one logit per binary label column), ``ce`` (class ids in one column),
``mse`` (regression). Metrics come from scikit-learn and SciPy.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn import metrics as skm

log = logging.getLogger(__name__)

#: metric -> True when larger is better
HIGHER_IS_BETTER = {
    "roc_auc": True, "pr_auc": True, "accuracy": True, "mcc": True, "f1": True,
    "pearson": True, "spearman": True, "r2": True, "rmse": False, "mae": False,
}


def task_loss(kind: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss over the labels that are present (0, with the graph kept, when none is);
    shapes do not depend on which are present, so nothing waits for the device."""
    if kind == "ce":
        return F.cross_entropy(outputs.float(), labels.reshape(-1).long())
    present = ~torch.isnan(labels)
    target = torch.where(present, labels, torch.zeros_like(labels))
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(outputs.float(), target, reduction="none")
    elif kind == "mse":
        per = (outputs.float() - target) ** 2
    else:
        raise ValueError(f"unknown loss kind '{kind}'")
    return torch.where(present, per, 0.0).sum() / present.sum().clamp_min(1)


def best_offset(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per label column of a ``bce`` batch, the offset b (within ±20) that minimises the
    masked loss of ``outputs + b``: a constant, without gradient.

    ``task_loss("bce", outputs + best_offset(outputs, labels), labels)`` is the loss with
    the label prior refitted on the batch: what is left is the ranking, the part ROC-AUC
    reads. Its gradient in ``outputs`` at the fixed offset is its full gradient (b is a
    minimiser: the envelope theorem). The column's loss gradient, Σ(σ(z + b) − y), rises
    with b, so bisection finds its zero.
    """
    z = outputs.detach().double()
    present = ~torch.isnan(labels)
    target = torch.nan_to_num(labels.detach()).double()
    low = torch.full(z.shape[1:], -20.0, dtype=torch.float64, device=z.device)
    high = -low
    for _ in range(50):  # 40 / 2**50: exact to float64 rounding
        mid = (low + high) / 2
        rising = ((torch.sigmoid(z + mid) - target) * present).sum(0) > 0
        low, high = torch.where(rising, low, mid), torch.where(rising, mid, high)
    return ((low + high) / 2).float()


def overconfidence(kind: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d/ds of ``task_loss(s · outputs)`` at s = 1, a scalar.

    Positive: outputs scaled down (softer probabilities, predictions nearer 0) would lower
    the loss, i.e. the model is overconfident on these labels. Measured on w's validation
    batch it explains λ moving towards an objective that shrinks the features: such an
    objective lowers an overconfident validation loss whether or not it helps the task
    (docs/known-answer.md, "Does learning λ work?")."""
    scale = torch.ones((), dtype=torch.float32, device=outputs.device, requires_grad=True)
    with torch.enable_grad():
        loss = task_loss(kind, outputs.detach().float() * scale, labels)
        return torch.autograd.grad(loss, scale)[0].detach()


def predictions(kind: str, outputs: torch.Tensor) -> np.ndarray:
    """Scores a metric reads: probabilities (bce), class ids (ce) or values (mse)."""
    if kind == "bce":
        return torch.sigmoid(outputs.float()).cpu().numpy()
    if kind == "ce":
        return outputs.argmax(-1).cpu().numpy()
    return outputs.float().cpu().numpy()


def score(metric: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """``metric`` over all label columns; NaN labels are ignored.

    ROC-AUC and PR-AUC (average precision) average over the columns that have both classes
    in this split and warn about the others; they are NaN when no column has both. Accuracy,
    MCC and F1 read class ids (``ce``) or probabilities thresholded at 0.5 (``bce``); F1 is
    the positive class's for two classes and the unweighted mean over classes (macro) for
    more. R² is the coefficient of determination per column, averaged. The other metrics are
    computed in float64 whatever the dtype of ``preds`` (the model's float32 outputs).
    """
    if metric in ("accuracy", "mcc", "f1"):
        if np.issubdtype(preds.dtype, np.floating):  # bce probabilities: decide at 0.5
            preds = preds >= 0.5
        mask = ~np.isnan(labels.reshape(-1))
        y, p = labels.reshape(-1)[mask].astype(int), preds.reshape(-1)[mask].astype(int)
        if metric == "accuracy":
            return float(skm.accuracy_score(y, p))
        if metric == "mcc":
            return float(skm.matthews_corrcoef(y, p))
        binary = set(np.unique(np.concatenate([y, p]))) <= {0, 1}
        return float(skm.f1_score(y, p, average="binary" if binary else "macro"))
    # float64: SciPy computes in its inputs' precision, and a float32 Pearson of 24 rows was
    # already 2.5e-6 from the float64 one
    preds = np.asarray(preds, dtype=np.float64).reshape(len(preds), -1)
    labels = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    columns = []
    for t in range(labels.shape[1]):
        mask = ~np.isnan(labels[:, t])
        y, p = labels[mask, t], preds[mask, t]
        if metric in ("roc_auc", "pr_auc"):
            if len(np.unique(y)) < 2:
                log.warning("%s skips label column %d: only one class in this split",
                            "ROC-AUC" if metric == "roc_auc" else "PR-AUC", t)
                continue
            columns.append((skm.roc_auc_score if metric == "roc_auc" else skm.average_precision_score)(y, p))
        elif metric == "rmse":
            columns.append(np.sqrt(np.mean((y - p) ** 2)))
        elif metric == "mae":
            columns.append(np.mean(np.abs(y - p)))
        elif metric == "r2":
            columns.append(skm.r2_score(y, p))
        elif metric == "pearson":
            columns.append(stats.pearsonr(y, p)[0])
        elif metric == "spearman":
            columns.append(stats.spearmanr(y, p)[0])
        else:
            raise ValueError(f"unknown metric '{metric}'")
    return float(np.mean(columns)) if columns else float("nan")


def better(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` beats ``old`` (NaN never does)."""
    if np.isnan(new):
        return False
    if old is None or np.isnan(old):
        return True
    return new > old if HIGHER_IS_BETTER[metric] else new < old
