"""``tapweight run mol custom``: a user's CSV with its own SMILES column and two regression
targets, on a scaffold split, scored per target, then predicted and exported."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tapweight import TapweightError
from tapweight.commands.export import export
from tapweight.commands.predict import predict
from tapweight.job.runner import resolve, run
from tests.nlp.conftest import DATA

TINY = ["steps=2", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8",
        "final.epochs=1", "final.batch_size=16", "mol.image_size=32", "mol.mir_size=16",
        "mol.render_workers=1", "objectives=[mol.jpp,mol.mcl]"]
COLUMNS = ["mol.smiles_column=compound", "mol.target_columns=[pIC50,logD]"]


def assay(n: int) -> pd.DataFrame:
    """FreeSolv's first ``n`` molecules with two regression targets, in the user's own names."""
    solv = pd.read_csv(DATA / "moleculenet" / "freesolv.csv").head(n)
    return pd.DataFrame({"compound": solv["smiles"], "pIC50": solv["expt"], "logD": solv["calc"],
                         "note": "x"})


@pytest.fixture(scope="module")
def assay_run(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("assay")
    assay(80).to_csv(folder / "assay.csv", index=False)
    before = hashlib.sha256((folder / "assay.csv").read_bytes()).hexdigest()
    job = resolve("mol", "custom", preset="cpu", options={"data": str(folder / "assay.csv")}, sets=[*TINY, *COLUMNS])
    run(job, folder / "run", quiet=True)
    assert hashlib.sha256((folder / "assay.csv").read_bytes()).hexdigest() == before
    return folder / "run"


@pytest.mark.slow
def test_two_regression_targets_on_a_scaffold_split_scored_per_target(assay_run):
    summary = json.loads((assay_run / "metrics.json").read_text())
    assert (summary["name"], summary["metric"]) == ("assay", "rmse")
    seed = summary["seeds"]["0"]
    assert {"test_rmse/pIC50", "test_rmse/logD", "test_mae/pIC50", "test_mae/logD", "test_mae", "test_r2"} <= set(seed)
    test = pd.read_csv(assay_run / "seed0" / "predictions.csv")
    for name in ("pIC50", "logD"):  # per target, in the targets' units, from the written predictions
        rmse = np.sqrt(np.mean((test[name] - test[f"pred_{name}"]) ** 2))
        assert seed[f"test_rmse/{name}"] == pytest.approx(rmse, rel=1e-5)
        assert seed[f"test_mae/{name}"] == pytest.approx(np.mean(np.abs(test[name] - test[f"pred_{name}"])), rel=1e-5)
    log = (assay_run / "log.txt").read_text()
    assert "task assay: regression of pIC50, logD; metric rmse (also reported: mae, r2)" in log
    assert "split scaffold: train" in log
    assert json.loads((assay_run / "seed0" / "model.json").read_text())["label_names"] == ["pIC50", "logD"]


@pytest.mark.slow
def test_predict_and_export_the_assay_model(assay_run, tmp_path):
    assay(5).drop(columns=["pIC50", "logD"]).to_csv(tmp_path / "new.csv", index=False)
    got = predict(assay_run, tmp_path / "new.csv", device="cpu")
    assert list(got.columns) == ["row", "input", "pred_pIC50", "pred_logD", "error"]
    assert got["error"].eq("").all()
    assay(5).rename(columns={"compound": "SMILES_in"}).to_csv(tmp_path / "other.csv", index=False)
    same = predict(assay_run, tmp_path / "other.csv", device="cpu", columns={"smiles_column": "SMILES_in"})
    pd.testing.assert_frame_equal(same, got)
    files = export(assay_run, "torchvision", tmp_path / "tv", finetuned=True)
    assert [f.name for f in files] == ["resnet18.pth"]


def test_the_task_type_comes_from_the_labels_or_the_options(tmp_path):
    frame = pd.DataFrame({"smi": ["CCO", "CCN", "CCC", "CCCl"], "active": [0, 1, 0, 1], "tox": [1, 1, 0, None]})
    frame.to_csv(tmp_path / "screen.csv", index=False)
    options = {"data": str(tmp_path / "screen.csv")}
    task = resolve("mol", "custom", preset="cpu", options=options, sets=["mol.smiles_column=smi"]).task
    assert (task.loss, task.metric, task.extra_metrics, task.title) == ("bce", "roc_auc", ("pr_auc",), "screen")
    job = resolve("mol", "custom", preset="cpu", options=options,
                  sets=["mol.smiles_column=smi", "mol.target_columns=[active]", "mol.task_type=regression"])
    assert job.task.loss == "mse" and job.cfg.final.lr == 0.001  # the regression sets' rates
    assert job.cfg.options.target_columns == ["active"]
    with pytest.raises(TapweightError, match="has no column 'smiles'.*mol.smiles_column=NAME"):
        resolve("mol", "custom", preset="cpu", options=options)
    with pytest.raises(TapweightError, match="mol.metric='rmse' does not score a binary task"):
        resolve("mol", "custom", preset="cpu", options=options, sets=["mol.smiles_column=smi", "mol.metric=rmse"])
