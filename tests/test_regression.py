"""Regression runs end to end on the toy domain: targets standardised on the train split,
metrics and predictions in the original units, and one-line errors (exit 2, no results
written) when a level or the final fine-tune diverges."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from tapweight.method.batches import random_split
from tests.test_cli import cli


def error_line(capsys) -> str:
    """The last line on stderr (the CLI logs INFO lines there before it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_regression_run_saves_its_scaler_and_scores_in_original_units(toy, tmp_path):
    out = tmp_path / "reg"
    assert cli("run", "toy", "blobs-reg", "--quiet", "--out", str(out)) == 0
    table = toy.load(None)
    split = random_split(table, 0)  # the toy task's split, seed 0
    y = table.labels[:, 0]
    saved = json.loads((out / "seed0" / "target_scaler.json").read_text())
    assert saved["columns"] == ["y"]
    assert saved["mean"] == [pytest.approx(y[split.train].mean())]
    assert saved["std"] == [pytest.approx(y[split.train].std())]
    predictions = pd.read_csv(out / "seed0" / "predictions.csv")
    assert predictions["row"].tolist() == split.test.tolist()
    assert predictions["y"].tolist() == y[split.test].tolist()  # the raw 0/1 labels
    residual = predictions["pred_y"] - predictions["y"]
    result = json.loads((out / "seed0" / "metrics.json").read_text())
    assert result["test"] == pytest.approx(np.sqrt(np.mean(residual ** 2)), rel=1e-5)


def test_a_diverging_final_fine_tune_stops_with_one_line_and_writes_no_result(toy, tmp_path, capsys):
    out = tmp_path / "diverged"
    assert cli("run", "toy", "blobs-reg", "--quiet", "--method", "none", "--out", str(out),
               "--set", "final.lr=1e8") == 2
    err = error_line(capsys)
    assert err.startswith("error: the final fine-tune diverged: its training loss is ")
    assert "lower final.lr (now 1e+08)" in err
    for name in ("metrics.json", "seed0/metrics.json", "seed0/predictions.csv"):
        assert not (out / name).exists(), name


@pytest.mark.parametrize("sets,kept", [
    ([], "no checkpoint exists yet (checkpoint_every=N keeps one every N steps)"),
    (["--set", "checkpoint_every=1"], "the checkpoint of step 1 is kept in "),
])
def test_a_non_finite_loss_says_which_value_what_to_lower_and_what_was_kept(toy, tmp_path, capsys,
                                                                            sets, kept):
    out = tmp_path / "nan"
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(out), "--steps", "5",
               "--set", "pretrain.lr=1e25", *sets) == 2
    err = error_line(capsys)
    # which non-finite value an overflow gives (nan, inf or -inf) depends on the CPU and BLAS:
    # the message names the value it saw, whichever it is
    assert re.match(r"error: non-finite loss at step 2 \(objective denoise = -?(nan|inf)[;)]", err), err
    assert "lower pretrain.lr (now 1e+25)" in err and kept in err
    assert not (out / "metrics.json").exists()


def test_a_diverging_level_two_names_the_fine_tuning_rate(toy, tmp_path, capsys):
    assert cli("run", "toy", "blobs-reg", "--quiet", "--out", str(tmp_path / "nan"),
               "--set", "finetune.lr=1e30") == 2
    err = error_line(capsys)
    assert err.startswith("error: non-finite loss at step ")
    assert "lower finetune.lr (now 1e+30)" in err
