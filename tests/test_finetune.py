"""The final fine-tune: scores in the original units of a regression target, and errors, never
NaN results, when it diverges or its metric is undefined."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tapweight import DomainData, TapweightError, TaskSpec
from tapweight.config import FinalConfig
from tapweight.method.final import evaluate, refinetune
from tapweight.method.models import TaskModel
from tapweight.method.targets import TargetScaler

REGRESSION = TaskSpec("t", "reg", "t.reg", "random", "mse", "rmse", extra_metrics=("mae",))
BINARY = TaskSpec("t", "bin", "t.bin", "random", "bce", "roc_auc")
CPU = torch.device("cpu")


class Features(nn.Module):
    """A linear backbone: the final fine-tune fits a linear model."""

    out_dim = 4

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 4)

    def forward(self, x):
        return self.net(x)


def linear_problem(n=96, seed=0):
    """Inputs ``[n, 4]`` and targets in large raw units (mean ~500, spread ~100), exactly linear."""
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(n, 4)).astype(np.float32)
    y = (500 + x @ np.array([60.0, -30.0, 80.0, 10.0]))[:, None]  # [n, 1]
    return x, y


def domain_data(x, y, parts=(64, 16, 16)):
    """Train/val/test TensorDatasets of consecutive rows."""
    cuts = np.cumsum((0, *parts))
    sets = [TensorDataset(torch.tensor(x[a:b]), torch.tensor(y[a:b], dtype=torch.float32))
            for a, b in zip(cuts[:-1], cuts[1:])]
    collate = lambda items: tuple(torch.stack(t) for t in zip(*items))  # noqa: E731
    return DomainData(sets[0], collate, *sets, task_collate=collate)


def test_a_model_predicting_the_train_mean_scores_the_test_spread_around_it():
    x, y = linear_problem()
    scaler = TargetScaler.fit(y[:64], ("y",))
    data = domain_data(x, scaler.transform(y))
    head = nn.Linear(4, 1)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)  # predicts 0: the train mean, standardised
    scores = evaluate(TaskModel(Features(), head), data.test, data.task_collate, REGRESSION, 8, CPU,
                      scaler=scaler)
    residual = y[80:, 0] - y[:64, 0].mean()  # in the raw units
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean(residual ** 2)), rel=1e-5)
    assert scores["mae"] == pytest.approx(np.mean(np.abs(residual)), rel=1e-5)


def test_a_standardised_fine_tune_fits_and_reports_raw_units():
    x, y = linear_problem()
    scaler = TargetScaler.fit(y[:64], ("y",))
    data = domain_data(x, scaler.transform(y))
    cfg = FinalConfig(lr=0.05, epochs=30, batch_size=16, scheduler="constant", weight_decay=0.0)
    result, preds, _ = refinetune(Features(), lambda: nn.Linear(4, 1), data, REGRESSION, cfg, CPU, 0,
                               scaler=scaler)
    assert preds.shape == (16, 1)
    assert result["test"] == pytest.approx(np.sqrt(np.mean((preds - y[80:]) ** 2)), rel=1e-4)
    assert result["test"] < 0.05 * y[:64].std()  # a linear fit of a linear target


def test_a_diverging_fine_tune_is_an_error_that_names_its_learning_rate():
    x, y = linear_problem()
    data = domain_data(x, y)  # raw units and a far too large step
    cfg = FinalConfig(lr=10.0, epochs=5, batch_size=16, scheduler="constant")
    with pytest.raises(TapweightError, match=r"final fine-tune diverged: its training loss is "
                                             r"(nan|inf) at epoch \d, step \d of 4; lower final.lr \(now 10\)"):
        refinetune(Features(), lambda: nn.Linear(4, 1), data, REGRESSION, cfg, CPU, 0)


@pytest.mark.parametrize("one_class,where", [(slice(64, 80), "validation roc_auc was NaN in every epoch"),
                                             (slice(80, 96), "test roc_auc = nan")])
def test_an_undefined_metric_is_an_error_not_a_nan_result(one_class, where):
    x, _ = linear_problem()
    y = (x[:, :1] > 0).astype(np.float64)
    y[one_class] = 1.0  # a split with a single class: ROC-AUC is undefined there
    cfg = FinalConfig(lr=0.01, epochs=2, batch_size=16)
    with pytest.raises(TapweightError, match=where + r".*undefined on this split"):
        refinetune(Features(), lambda: nn.Linear(4, 1), domain_data(x, y), BINARY, cfg, CPU, 0)


def test_early_stopping_says_when_and_which_epoch_it_keeps(caplog):
    x, y = linear_problem()
    scaler = TargetScaler.fit(y[:64], ("y",))
    data = domain_data(x, scaler.transform(y))
    cfg = FinalConfig(lr=0.0, epochs=10, batch_size=16, scheduler="constant", patience=2)  # lr 0: never better
    seen = []
    with caplog.at_level("INFO", logger="tapweight.method.final"):
        result, _, _ = refinetune(Features(), lambda: nn.Linear(4, 1), data, REGRESSION, cfg, CPU, 0, scaler=scaler,
                                  on_epoch=lambda epoch, value: seen.append(epoch))
    assert seen == [1, 2, 3] and result["best_epoch"] == 1
    assert ("final fine-tune stopped early after epoch 3 of 10: no better validation rmse for 2 epochs "
            "(final.patience); keeping epoch 1") in caplog.text
