"""``tapweight predict`` and ``export`` on the toy domain: the saved final model reproduces the
run's own test predictions, seeds average, regression comes back in the targets' units."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tapweight.commands.export import export
from tapweight.commands.predict import predict
from tests import toy_plugin
from tests.test_cli import cli, run_toy

FEATURES = np.stack(toy_plugin.load(None).inputs)  # [240, 8], the toy data set's rows


def write_rows(path, rows: np.ndarray):
    np.savetxt(path, rows, delimiter=",")
    return path


def test_the_saved_model_gives_the_runs_test_predictions(toy, tmp_path):
    out = run_toy(tmp_path, "--seeds", "0,1")
    for seed in (0, 1):
        info = json.loads((out / f"seed{seed}" / "model.json").read_text())
        assert info == {"domain": "toy", "task": "blobs", "loss": "bce", "metric": "roc_auc",
                        "label_names": ["y"], "classes": [], "n_outputs": 1, "head": "core.linear",
                        "backbone": "toy.mlp"}
        expected = pd.read_csv(out / f"seed{seed}" / "predictions.csv")
        rows = write_rows(tmp_path / f"test{seed}.csv", FEATURES[expected["row"]])
        got = predict(out, rows, seed=seed, device="cpu")
        assert list(got.columns) == ["row", "pred_y", "error"]
        assert got["row"].tolist() == list(range(1, len(expected) + 1))
        np.testing.assert_allclose(got["pred_y"], expected["pred_y"], rtol=1e-5, atol=1e-6)
        assert (got["error"] == "").all()


def test_several_seeds_average_and_bad_rows_get_a_reason(toy, tmp_path, capsys):
    out = run_toy(tmp_path, "--seeds", "0,1")
    rows = FEATURES[:10].copy()
    rows[3, 2] = np.nan
    data = write_rows(tmp_path / "new.csv", rows)
    each = [predict(out, data, seed=s, device="cpu")["pred_y"] for s in (0, 1)]
    both = predict(out, data, device="cpu")
    np.testing.assert_allclose(both["pred_y"], (each[0] + each[1]) / 2, rtol=1e-6)
    assert np.isnan(both["pred_y"][3]) and both["error"][3] == "not a finite row"
    assert both["pred_y"].drop(index=3).notna().all() and (both["error"].drop(index=3) == "").all()
    capsys.readouterr()
    assert cli("predict", str(out), "--data", str(data), "--out", str(tmp_path / "p.csv")) == 0
    written = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert written["error"][3] == "not a finite row" and written["pred_y"][3] == ""
    np.testing.assert_allclose(pd.to_numeric(written["pred_y"].drop(index=3)), both["pred_y"].drop(index=3))


def test_regression_predictions_are_in_the_targets_units(toy, tmp_path):
    assert cli("run", "toy", "blobs-reg", "--quiet", "--out", str(tmp_path / "reg")) == 0
    expected = pd.read_csv(tmp_path / "reg" / "seed0" / "predictions.csv")
    got = predict(tmp_path / "reg", write_rows(tmp_path / "x.csv", FEATURES[expected["row"]]), device="cpu")
    np.testing.assert_allclose(got["pred_y"], expected["pred_y"], rtol=1e-5, atol=1e-6)
    scaler = json.loads((tmp_path / "reg" / "seed0" / "target_scaler.json").read_text())
    assert scaler["std"][0] != 1 and scaler["mean"][0] != 0  # the scaler was needed


def test_classes_get_ids_names_and_probabilities(toy, tmp_path):
    assert cli("run", "toy", "blobs-ce", "--quiet", "--out", str(tmp_path / "ce")) == 0
    expected = pd.read_csv(tmp_path / "ce" / "seed0" / "predictions.csv")
    got = predict(tmp_path / "ce", write_rows(tmp_path / "x.csv", FEATURES[expected["row"]]), device="cpu")
    assert list(got.columns) == ["row", "pred_y", "pred_y_class", "prob_left", "prob_right", "error"]
    assert got["pred_y"].tolist() == expected["pred_y"].astype(int).tolist()
    assert got["pred_y_class"].tolist() == [("left", "right")[i] for i in got["pred_y"]]
    np.testing.assert_allclose(got["prob_left"] + got["prob_right"], 1, rtol=1e-6)
    assert ((got["prob_right"] > 0.5) == (got["pred_y"] == 1)).all()


def test_export_writes_the_pretrained_or_the_finetuned_weights(toy, tmp_path):
    out = run_toy(tmp_path)
    files = export(out, "state")
    assert files == [out / "export" / "state-seed0" / "backbone.pt"]
    theta = load_file(str(out / "seed0" / "backbone.safetensors"))
    exported = torch.load(files[0], weights_only=True)
    assert exported.keys() == theta.keys() and all(torch.equal(exported[k], theta[k]) for k in theta)
    files = export(out, "state", tmp_path / "ft", finetuned=True)
    model = load_file(str(out / "seed0" / "model.safetensors"))
    backbone, head = (torch.load(tmp_path / "ft" / name, weights_only=True) for name in ("backbone.pt", "head.pt"))
    assert all(torch.equal(backbone[k], model[f"backbone.{k}"]) for k in backbone)
    assert all(torch.equal(head[k], model[f"head.{k}"]) for k in head) and len(backbone) + len(head) == len(model)
    assert not torch.equal(backbone["net.0.weight"], theta["net.0.weight"])  # fine-tuning moved it


@pytest.mark.parametrize("args,message", [
    (["export", "{run}", "--format", "onnx"], "domain 'toy' has no export format 'onnx' (formats: state)"),
    (["export", "{run}", "--format", "state", "--out", "{run}"], "exists and is not an empty folder"),
    (["predict", "{run}", "--data", "missing.csv"], "--data 'missing.csv' is not a file"),
    (["predict", "{run}", "--data", "x.csv", "--seed", "7"], "--seed 7: it is not one of the run's seeds"),
    (["predict", "{none}", "--data", "x.csv", "--seed", "0"], None),
    (["export", "{none}", "--format", "state"], "method 'none' did not continue pretraining; export "
                                                "the fine-tuned model with --finetuned"),
    (["predict", "/nonexistent", "--data", "x.csv"], "is not a run folder"),
])
def test_mistakes_are_one_line(toy, tmp_path, capsys, monkeypatch, args, message):
    run, none = run_toy(tmp_path), run_toy(tmp_path, "--method", "none", name="none")
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path / "x.csv", FEATURES[:3])
    capsys.readouterr()
    code = cli(*[a.format(run=run, none=none) for a in args])
    err = capsys.readouterr().err.strip()
    if message is None:  # a run of method none predicts like any other
        assert code == 0 and (tmp_path / "x_preds.csv").is_file()
        return
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err


def test_a_run_without_saved_models_says_how_to_get_them(toy, tmp_path, capsys):
    out = run_toy(tmp_path)
    (out / "seed0" / "model.safetensors").unlink()
    assert cli("predict", str(out), "--data", "x.csv") == 2
    assert "no seed of" in capsys.readouterr().err


def test_a_domain_without_a_predictor_is_one_line(toy, tmp_path, capsys, monkeypatch):
    out = run_toy(tmp_path)
    from dataclasses import replace

    from tapweight.job import runner

    original = runner.build_registry

    def without_predictor():
        registry = original()
        registry.tables["domains"]["toy"] = replace(registry.tables["domains"]["toy"], load_predictor=None)
        return registry

    monkeypatch.setattr(runner, "build_registry", without_predictor)
    write_rows(tmp_path / "x.csv", FEATURES[:3])
    assert cli("predict", str(out), "--data", str(tmp_path / "x.csv")) == 2
    assert "domain 'toy' cannot score new inputs" in capsys.readouterr().err
