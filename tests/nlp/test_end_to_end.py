"""``tapweight run nlp sst2`` end to end on the real SST-2 files, with a very small config."""

import csv
import json
import logging

import pytest

from tapweight.job import runner
from tapweight_nlp.backbone import build_backbone
from tests.nlp.conftest import SENTENCES, SST2, TINY


@pytest.mark.slow
def test_tapweight_on_sst2_end_to_end(tmp_path, cache_dir, caplog):
    caplog.set_level(logging.INFO)  # what the CLI logs to log.txt
    sets = [*TINY, "nlp.max_train=96", "nlp.max_val=32", "pretrain.batch_size=16",
            "finetune.batch_size=16", "reweight.batch_size=16", "final.batch_size=32",
            "final.epochs=1"]
    job = runner.resolve("nlp", "sst2", preset="cpu", options={
        "data": str(SST2), "steps": 4, "method": "tapweight"}, sets=sets)
    summary = runner.run(job, tmp_path / "run", quiet=True)
    result = summary["seeds"][0]
    assert 0.0 <= result["test"] <= 1.0 and summary["metric"] == "accuracy"
    seed = tmp_path / "run" / "seed0"
    metrics = json.loads((seed / "metrics.json").read_text())
    assert metrics["test"] == result["test"]
    with open(seed / "weights.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    lam = [float(rows[-1][k]) for k in ("mlm", "cl", "sop")]
    assert sum(lam) == pytest.approx(1.0) and lam != [1 / 3] * 3  # λ moved
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "subsampled by nlp.max_train" in log and "TAPT" in log
    # the continued-pretrained backbone is a valid --init
    cfg = runner.resolve("nlp", "sst2", preset="cpu", sets=sets,
                         options={"init": str(seed / "backbone.safetensors")}).cfg
    assert build_backbone(cfg).out_dim == 32


@pytest.mark.slow
def test_a_headerless_ag_news_style_folder_runs(tmp_path, cache_dir, capsys):
    """AG News as its authors distribute it: no header row, class 1..4, title, description."""
    from tests.nlp.test_data import write_headerless
    from tests.test_cli import cli

    rows = [(1 + i % 4, f"title {i}", f"{s} number {i}") for i, s in enumerate(SENTENCES * 4)]
    data = write_headerless(tmp_path / "ag", rows)
    sets = [*TINY, "nlp.header=false", "nlp.label_column=0", "nlp.text_column=1", "nlp.pair_column=2",
            "nlp.label_base=1", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=4",
            "final.batch_size=8", "final.epochs=1"]
    args = [arg for s in sets for arg in ("--set", s)]
    assert cli("run", "nlp", "agnews", "--data", str(data), "--steps", "2", "--out", str(tmp_path / "run"),
               *args) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["metric"] == "accuracy" and 0 <= summary["test_mean"] <= 1
    assert capsys.readouterr().out.splitlines()[-1] == f"run folder: {tmp_path / 'run'}"
