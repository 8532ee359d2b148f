"""``tapweight run nlp sst2`` end to end on the real SST-2 files, with a very small config."""

import csv
import json
import logging

import pytest

from tapweight import runner
from tapweight_nlp.backbone import build_backbone
from tests.nlp.conftest import SST2, TINY


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
