"""Losses and metrics with missing labels, checked against direct scikit-learn calls."""

import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tapweight.method.metrics import best_offset, better, overconfidence, score, task_loss


def test_roc_auc_masks_missing_labels_and_averages_columns():
    labels = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0], [np.nan, 1]], dtype=float)
    preds = np.array([[0.9, 0.2], [0.3, 0.5], [0.6, 0.7], [0.1, 0.4], [0.5, 0.9]])
    first = roc_auc_score([1, 0, 1, 0], [0.9, 0.3, 0.6, 0.1])
    second = roc_auc_score([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9])
    assert score("roc_auc", preds, labels) == pytest.approx((first + second) / 2)


def test_roc_auc_skips_a_single_class_column_with_a_warning(caplog):
    labels = np.array([[1, 1], [0, 1], [1, 1]], dtype=float)
    preds = np.array([[0.8, 0.1], [0.2, 0.2], [0.7, 0.3]])
    with caplog.at_level(logging.WARNING):
        value = score("roc_auc", preds, labels)
    assert value == pytest.approx(1.0)
    assert "skips label column 1: only one class" in caplog.text
    assert np.isnan(score("roc_auc", preds[:, 1:], labels[:, 1:]))  # nothing left to score


def test_masked_bce_equals_bce_on_present_labels():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.5, 2.0, 0.3]), torch.tensor([1.0, 0.0, 1.0]))
    assert task_loss("bce", logits, labels) == pytest.approx(float(expected))


def test_regression_metrics_and_direction():
    y = np.array([[1.0], [2.0], [np.nan], [4.0]])
    p = np.array([[1.5], [2.0], [9.0], [3.0]])
    assert score("rmse", p, y) == pytest.approx(np.sqrt((0.25 + 0 + 1) / 3))
    assert better("rmse", 0.5, 0.6) and not better("roc_auc", 0.5, 0.6)
    assert not better("roc_auc", float("nan"), None)


def test_label_metrics_threshold_probabilities_and_read_class_ids():
    labels = np.array([[1.0], [0.0], [1.0], [np.nan]])
    probabilities = np.array([[0.7], [0.6], [0.2], [0.9]], dtype=np.float32)  # bce: 0.5 cut
    assert score("accuracy", probabilities, labels) == pytest.approx(1 / 3)
    class_ids = np.array([1, 0, 1])  # ce: argmax ids
    assert score("accuracy", class_ids, np.array([[1.0], [0.0], [0.0]])) == pytest.approx(2 / 3)


def test_best_offset_minimises_each_columns_loss_and_the_refit_loss_has_its_gradient():
    """Against SciPy's scalar minimiser per column (missing labels masked), and the gradient
    of the refitted loss at the fixed offset against a central difference that refits the
    offset at every point (b is a minimiser: the envelope theorem)."""
    from scipy.optimize import minimize_scalar

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(32, 3, generator=gen, dtype=torch.float64) * 2 + torch.tensor([3.0, -1.0, 0.0], dtype=torch.float64)
    y = (torch.rand(32, 3, generator=gen) < torch.tensor([0.5, 0.8, 0.3])).double()
    y[::5, 1] = float("nan")
    b = best_offset(z, y)
    for j in range(3):
        rows = ~y[:, j].isnan()
        zj, yj = z[rows, j].numpy(), y[rows, j].numpy()
        ref = minimize_scalar(lambda c: float(np.mean(np.logaddexp(0, zj + c) - yj * (zj + c))),  # noqa: B023
                              bounds=(-20, 20), method="bounded", options={"xatol": 1e-10})
        assert float(b[j]) == pytest.approx(ref.x, abs=1e-5)

    def refit(out):
        return task_loss("bce", out + best_offset(out, y).double(), y)

    zg = z.clone().requires_grad_(True)
    grad = torch.autograd.grad(refit(zg), zg)[0]
    for i, j in [(0, 0), (7, 1), (31, 2)]:
        e = torch.zeros_like(z)
        e[i, j] = 1e-2  # task_loss is float32: a step its rounding does not swamp
        assert float(grad[i, j]) == pytest.approx(float((refit(z + e) - refit(z - e)) / 2e-2), rel=1e-3)
    assert float(refit(z)) < float(task_loss("bce", z, y))  # the prior no longer counts


def test_overconfidence_is_the_loss_slope_in_the_outputs_scale():
    """d/ds L(s·z) at s = 1 in closed form: Σ (p − y)·z for softmax and sigmoid cross-entropy
    (present labels only), 2 (z − y)·z for the squared error."""
    z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(z, -1)
    expected = ((p - torch.nn.functional.one_hot(y, 3)) * z).sum(-1).mean()
    assert float(overconfidence("ce", z, y)) == pytest.approx(float(expected), rel=1e-6)
    labels = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, float("nan")]])
    present = ~labels.isnan()
    expected = ((torch.sigmoid(z) - labels.nan_to_num()) * z)[present].mean()
    assert float(overconfidence("bce", z, labels)) == pytest.approx(float(expected), rel=1e-6)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert float(overconfidence("mse", z, targets)) == pytest.approx(float((2 * (z - targets) * z).mean()), rel=1e-6)
    # a confident mistake: softer predictions would help; an underconfident hit: sharper ones
    assert overconfidence("ce", torch.tensor([[4.0, -4.0]]), torch.tensor([1])) > 0
    assert overconfidence("ce", torch.tensor([[0.2, -0.2]]), torch.tensor([0])) < 0


def test_pr_auc_r2_and_multiclass_f1_match_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 2)).astype(float)
    p = rng.random((40, 2))
    y[3, 1] = np.nan  # a missing label is skipped in its column only
    kept = ~np.isnan(y[:, 1])
    expected = np.mean([skm.average_precision_score(y[:, 0], p[:, 0]),
                        skm.average_precision_score(y[kept, 1], p[kept, 1])])
    assert score("pr_auc", p, y) == pytest.approx(expected, rel=1e-12)
    t, v = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    expected = np.mean([skm.r2_score(t[:, i], v[:, i]) for i in range(2)])
    assert score("r2", v, t) == pytest.approx(expected, rel=1e-12)
    classes, guess = rng.integers(0, 3, size=50), rng.integers(0, 3, size=50)
    assert score("f1", guess, classes.reshape(-1, 1).astype(float)) == pytest.approx(
        skm.f1_score(classes, guess, average="macro"), rel=1e-12)
    assert score("f1", guess % 2, (classes % 2).reshape(-1, 1).astype(float)) == pytest.approx(
        skm.f1_score(classes % 2, guess % 2), rel=1e-12)  # two classes: the positive class's F1
    assert better("pr_auc", 0.6, 0.5) and better("r2", 0.2, -0.1)
