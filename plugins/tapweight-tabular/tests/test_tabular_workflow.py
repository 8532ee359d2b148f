"""After a run: predict new rows, the Python API, and compare methods over seeds.

Predictions are checked against the run's own ``predictions.csv`` (the same final model on
its test rows, prepared by the training pipeline): a new CSV of those rows' raw features
must give the same numbers through the saved model and the saved feature scaler.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tapweight
from sklearn import datasets as skdatasets
from tapweight.commands.cli import app
from typer.testing import CliRunner

from tapweight_tabular.data import build_data, load_sklearn, stratified_split
from tapweight_tabular.features import load_predictor
from tapweight_tabular.plugin import TASKS

pytestmark = pytest.mark.slow
FAST = {"steps": 10, "final": {"epochs": 3}, "quiet": True}
LOADERS = {"breast-cancer": skdatasets.load_breast_cancer, "wine": skdatasets.load_wine,
           "diabetes": skdatasets.load_diabetes}


def cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)


def raw_rows(task: str, rows, label: str) -> pd.DataFrame:
    """The data set's rows as a user has them: a header of feature names, the label column too."""
    bunch = LOADERS[task]()
    frame = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    frame[label] = bunch.target
    return frame.iloc[rows].reset_index(drop=True)


@pytest.mark.parametrize("task,label,pred", [
    ("breast-cancer", "benign", "pred_benign"), ("wine", "cultivar", "pred_cultivar"),
    ("diabetes", "progression", "pred_progression")])
def test_predict_scores_valid_rows_as_the_run_scored_its_test_rows(tmp_path, task, label, pred):
    result = tapweight.run("tabular", task, out=tmp_path / "run", **FAST)
    expected = pd.read_csv(result.folder / "seed0" / "predictions.csv")
    frame = raw_rows(task, expected["row"], label).astype(object)
    frame.iloc[1, 0], frame.iloc[2, 3] = None, "n/a"  # two rows that cannot be scored
    frame.to_csv(tmp_path / "new.csv", index=False)
    got = result.predict(tmp_path / "new.csv", device="cpu")
    assert len(got) == len(expected) and got["row"].tolist() == list(range(1, len(got) + 1))
    first, fourth = frame.columns[0], frame.columns[3]
    assert got["error"].tolist()[:3] == ["", f"column '{first}' is empty",
                                         f"column '{fourth}' holds 'n/a', not a finite number"]
    valid = got["error"] == ""
    assert valid.sum() == len(got) - 2 and got.loc[~valid, pred].isna().all()
    np.testing.assert_allclose(got.loc[valid, pred].astype(float), expected.loc[valid, pred],
                               rtol=1e-5, atol=1e-5 * np.abs(expected[pred]).max())
    if task == "wine":  # three classes without names: ids and a probability per class
        probs = got.loc[valid, ["prob_0", "prob_1", "prob_2"]].to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
        assert (probs.argmax(1) == got.loc[valid, pred]).all()


def test_the_saved_predictor_prepares_rows_as_the_training_pipeline(tmp_path, make_cfg):
    cfg = make_cfg("wine", hidden=16, layers=1, out_dim=8)
    table = load_sklearn("wine", cfg)
    split = stratified_split(table, 3)
    data = build_data(cfg, table, split, TASKS[1])
    data.predictor.save(tmp_path)
    loaded = load_predictor(cfg, tmp_path)
    rows = [table.inputs[i] for i in split.test]
    x_train_pipeline = data.test.tensors[0]
    for predictor in (data.predictor, loaded):
        x, _ = predictor.collate([predictor.dataset(rows)[i] for i in range(len(rows))])
        assert np.array_equal(x.numpy(), x_train_pipeline.numpy())  # bit for bit
    shapes = [[p.shape for p in pr.backbone().parameters()] for pr in (loaded, data.predictor)]
    assert shapes[0] == shapes[1]


def test_a_csv_with_other_columns_is_one_line(tmp_path):
    result = tapweight.run("tabular", "wine", out=tmp_path / "run", **FAST)
    pd.DataFrame({"a": [1.0], "b": [2.0]}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(tapweight.TapweightError, match="2 feature columns; this run's model reads"):
        result.predict(tmp_path / "two.csv")


def test_the_python_api_gives_the_command_lines_metrics(tmp_path):
    cli("run", "tabular", "breast-cancer", "--steps", "10", "--set", "final.epochs=3",
        "--seeds", "0,1", "--method", "uniform", "--quiet", "--out", str(tmp_path / "cli"))
    result = tapweight.run("tabular", "breast-cancer", method="uniform", seeds=[0, 1],
                           out=tmp_path / "api", **FAST)
    assert result.metrics == json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert result.metric == "roc_auc" and result.test == result.metrics["test_mean"]
    assert set(result.seeds) == {0, 1} and set(result.weights) == {0, 1}
    assert list(result.weights[0].columns) == ["step", "mfr", "denoise", "scarf"]
    assert len(result.weights[0]) == 10
    assert result.paths["config"].is_file() and result.config["method"] == "uniform"
    assert tapweight.Result.load(tmp_path / "cli").metrics == result.metrics


def test_compare_two_methods_over_two_seeds_writes_the_table_with_p_values(tmp_path):
    out = tmp_path / "cmp"
    cli("compare", "tabular", "breast-cancer", "--methods", "none,uniform", "--seeds", "0,1",
        "--steps", "10", "--set", "final.epochs=3", "--quiet", "--out", str(out))
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["none", "uniform"] and (table["n_seeds"] == 2).all()
    runs = {m: json.loads((out / f"breast-cancer-{m}" / "metrics.json").read_text())
            for m in ("none", "uniform")}
    for m, row in table.set_index("method").iterrows():
        assert row["test_mean"] == pytest.approx(runs[m]["test_mean"])
        assert [row["test_seed0"], row["test_seed1"]] == pytest.approx(
            [runs[m]["seeds"]["0"]["test"], runs[m]["seeds"]["1"]["test"]])
    uniform = table.set_index("method").loc["uniform"]
    deltas = [runs["uniform"]["seeds"][s]["test"] - runs["none"]["seeds"][s]["test"]
              for s in ("0", "1")]
    assert [uniform["delta_seed0"], uniform["delta_seed1"]] == pytest.approx(deltas)
    assert 0 <= uniform["t_pvalue"] <= 1 and math.isnan(uniform["wilcoxon_pvalue"])  # n = 2: t only
    text = (out / "comparison.md").read_text()
    assert "paired t-test p" in text and f"{uniform['t_pvalue']:.3g}" in text
    assert "n/a (n = 2 < 6)" in text
    assert (out / "comparison.png").stat().st_size > 0
    # run again with a third seed: the finished seeds are reused, only seed 2 runs
    before = (out / "breast-cancer-none" / "seed0" / "metrics.json").stat().st_mtime_ns
    cli("compare", "tabular", "breast-cancer", "--methods", "none,uniform", "--seeds", "0,1,2",
        "--steps", "10", "--set", "final.epochs=3", "--quiet", "--out", str(out))
    assert (out / "breast-cancer-none" / "seed0" / "metrics.json").stat().st_mtime_ns == before
    assert pd.read_csv(out / "comparison.csv")["n_seeds"].tolist() == [3, 3]
