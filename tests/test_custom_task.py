"""The core's part of a task for any labelled file: its type and class names from the labels,
its metrics, its name."""

import pytest

from tapweight import TapweightError, class_names, custom_task, data_name, is_classification


@pytest.mark.parametrize("values,classification", [
    (["pos", "neg", "pos"], True),                # names
    ([0, 1, 1, 0, 2, 2], True),                   # whole numbers that repeat
    ([3, 7, 12, 7, 3, 5], False),                 # a count: 12 and 5 occur once
    ([0.5, 1.25, 0.5, 1.25], False),              # reals
    ([1, 1, 1], False),                           # one value: no classes to tell apart
])
def test_auto_task_type(values, classification):
    assert is_classification(values, "auto") is classification
    assert is_classification(values, "regression") is False
    assert is_classification(values, "classification") is True


def test_class_names_keep_numeric_ids_and_sort_names():
    assert class_names([2, 0, 1, 0.0]) == ["0", "1", "2"]
    assert class_names(["pos", "neutral ", "neg", "pos"]) == ["neg", "neutral", "pos"]
    assert class_names([1.5, 1]) == ["1", "1.5"]


def test_metrics_per_loss_and_the_run_name(tmp_path):
    task = custom_task("d", loss="mse", metric="", metric_option="d.metric", title="assay", split="random",
                       description="", settled={"d.task_type": "regression"})
    assert (task.metric, task.extra_metrics, task.shown_name) == ("rmse", ("mae", "r2"), "assay")
    assert task.defaults == {"d.task_type": "regression"} and task.fit is None
    chosen = custom_task("d", loss="bce", metric="pr_auc", metric_option="d.metric", title="t", split="random",
                         description="", settled={})
    assert (chosen.metric, chosen.extra_metrics) == ("pr_auc", ("roc_auc",))
    with pytest.raises(TapweightError, match="d.metric='rmse' does not score a multi-class task; use one of "
                                             "accuracy, f1, mcc"):
        custom_task("d", loss="ce", metric="rmse", metric_option="d.metric", title="t", split="random",
                    description="", settled={})
    (tmp_path / "my.assay.csv.gz").write_text("")
    assert data_name(str(tmp_path / "my.assay.csv.gz")) == "my"
    assert data_name(str(tmp_path)) == tmp_path.name
