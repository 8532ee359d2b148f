"""``tapweight run tabular custom``: a third-party domain offers a task for any labelled CSV
through the plugin API (``TaskSpec.fit`` and `tapweight.custom_task`)."""

import json

import pandas as pd
import pytest
import tapweight
from sklearn import datasets as skdatasets
from tapweight import TapweightError
from tapweight.job.runner import resolve

NAMES = {0: "barolo", 1: "grignolino", 2: "barbera"}


@pytest.fixture
def wine_csv(tmp_path):
    """scikit-learn's wine with the cultivar as a named class, in a column of the user's name."""
    frame = skdatasets.load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map(NAMES)
    frame.to_csv(tmp_path / "my_wines.csv", index=False)
    return tmp_path / "my_wines.csv"


def test_the_task_is_fitted_to_the_file(wine_csv, tmp_path):
    task = resolve(
        "tabular",
        "custom",
        preset="cpu",
        options={"data": str(wine_csv)},
        sets=["tabular.label_column=cultivar"],
    ).task
    assert (task.loss, task.classes, task.title, task.metric) == (
        "ce",
        ("barbera", "barolo", "grignolino"),
        "my_wines",
        "accuracy",
    )
    values = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "y": [1.5, 2.25, 0.5, 3.0]})
    values.to_csv(tmp_path / "reg.csv", index=False)
    task = resolve(
        "tabular",
        "custom",
        preset="cpu",
        options={"data": str(tmp_path / "reg.csv")},
        sets=["tabular.label_column=y", "tabular.metric=mae"],
    ).task
    assert (task.loss, task.metric, task.extra_metrics) == ("mse", "mae", ("rmse", "r2"))
    with pytest.raises(TapweightError, match="no label column 'label'.*tabular.label_column=NAME"):
        resolve("tabular", "custom", preset="cpu", options={"data": str(wine_csv)})


@pytest.mark.slow
def test_a_run_predicts_class_names(wine_csv):
    result = tapweight.run(
        "tabular",
        "custom",
        preset="cpu",
        data=str(wine_csv),
        steps=5,
        final={"epochs": 3},
        quiet=True,
        out=str(wine_csv.parent / "run"),
        tabular={"label_column": "cultivar"},
    )
    assert result.metrics["name"] == "my_wines" and 0 <= result.test <= 1
    assert "tabular/my_wines" in repr(result)
    info = json.loads((wine_csv.parent / "run" / "seed0" / "model.json").read_text())
    assert info["classes"] == ["barbera", "barolo", "grignolino"]
    got = result.predict(str(wine_csv), device="cpu")
    assert set(got["pred_cultivar_class"]) <= set(NAMES.values())
    assert (got["pred_cultivar_class"] == pd.read_csv(wine_csv)["cultivar"]).mean() > 0.5
