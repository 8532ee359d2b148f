"""``tapweight run mol bbbp`` end to end on a slice of the real BBBP file, tiny settings."""

import json
import math

import pytest

from tapweight.job.runner import resolve, run
from tapweight_mol.backbone import ImageMolResNet18, load_init
from tests.mol.conftest import BBBP

TINY = ["steps=2", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8",
        "final.epochs=1", "final.batch_size=16", "mol.image_size=32", "mol.mir_size=16",
        "mol.render_workers=1", "split=random"]


@pytest.mark.slow
def test_tapweight_run_then_init_from_its_checkpoints(tmp_path, cache_dir):
    lines = BBBP.read_text().splitlines()
    data = tmp_path / "bbbp.csv"
    data.write_text("\n".join(lines[:121]) + "\n")  # header + 120 rows, 2 invalid SMILES among them
    job = resolve("mol", "bbbp", preset="cpu", options={"data": str(data), "keep_checkpoint": True}, sets=TINY)
    summary = run(job, tmp_path / "run", quiet=True)
    seed = tmp_path / "run" / "seed0"
    result = json.loads((seed / "metrics.json").read_text())
    assert math.isfinite(result["val"]) or math.isnan(result["val"])
    assert summary["metric"] == "roc_auc"
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "skipped 2 invalid SMILES" in log and log.count("row 60") == 1  # said once
    assert (seed / "weights.csv").read_text().startswith("step,mg100,mg1000,mg10000,jpp,mcl")

    for checkpoint, fmt in (("backbone.safetensors", "ResNet18 state dict, safetensors"),
                            ("checkpoint.pt", "tapweight, torch zip file")):  # the runner's own formats
        report = load_init(ImageMolResNet18(), str(seed / checkpoint))
        assert report.format == fmt and report.loaded == 120 and not report.missing
    again = resolve("mol", "bbbp", preset="cpu", sets=[*TINY, f"data={data}", "method=none",
                                                       f"init={seed / 'checkpoint.pt'}"])
    run(again, tmp_path / "none", quiet=True)
    assert (tmp_path / "none" / "seed0" / "metrics.json").exists()


#: TapWeight (TMLR 2025, §5): global steps per MoleculeNet data set
PAPER_STEPS = {"muv": 30000, "hiv": 20000, "tox21": 10000, "toxcast": 10000, "bbbp": 3000,
               "bace": 3000, "clintox": 3000, "sider": 3000}


@pytest.mark.parametrize("task", sorted(PAPER_STEPS))
def test_paper_preset_is_the_papers_imagemol_setting(task):
    cfg = resolve("mol", task, preset="paper").cfg
    assert cfg.steps == PAPER_STEPS[task]
    assert (cfg.options.image_size, cfg.options.mir_size) == (224, 64)
    assert (cfg.pretrain.batch_size * cfg.pretrain.accumulate, cfg.finetune.batch_size,
            cfg.reweight.batch_size) == (1024, 64, 64)
    assert (cfg.pretrain.lr, cfg.finetune.lr, cfg.reweight.lr, cfg.finetune.gamma) == (0.02, 0.05, 200.0, 1e-3)
    assert cfg.pretrain.optimizer == cfg.finetune.optimizer == cfg.reweight.optimizer == "sgd"
    for level in (cfg.pretrain, cfg.finetune, cfg.reweight):  # "a step scheduler on all three levels"
        assert (level.scheduler, level.step_size, level.decay) == ("step", 100, 0.9)
    assert cfg.reweight.unroll == 1
    assert cfg.reweight.hypergrad == "auto" and cfg.reweight.scale == "reference"  # fd in fp32, jvp with amp
