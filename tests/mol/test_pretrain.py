"""``tapweight pretrain mol`` on RDKit's bundled NCI molecules: an encoder that ``run --init``
starts from, and a resumed run that ends where an uninterrupted one does."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from rdkit import RDConfig
from safetensors.torch import load_file

from tests.mol.conftest import BBBP
from tests.test_cli import cli
from tests.test_pretrain import crash_after

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
TINY = ["--set", "pretrain.batch_size=8", "--set", "mol.image_size=32", "--set", "mol.mir_size=16",
        "--set", "mol.render_workers=1", "--set", "num_workers=1", "--quiet", "--preset", "cpu"]


@pytest.mark.slow
def test_pretrain_on_nci_then_run_bbbp_from_its_encoder(tmp_path, cache_dir):
    out = tmp_path / "pre"
    assert cli("pretrain", "mol", "--corpus", str(NCI), "--steps", "2", *TINY, "--out", str(out)) == 0
    log = (out / "log.txt").read_text()
    assert "skipped 8 invalid SMILES of 4999" in log and "corpus_molecules: 4991" in log
    assert pd.read_csv(out / "losses.csv").columns.tolist() == [
        "step", "loss_mg100", "loss_mg1000", "loss_mg10000", "loss_jpp", "loss_mcl"]
    assert json.loads((out / "pretrain.json").read_text())["encoder"] == str(out / "backbone.safetensors")

    lines = BBBP.read_text().splitlines()
    data = tmp_path / "bbbp.csv"
    data.write_text("\n".join(lines[:121]) + "\n")
    run = tmp_path / "run"
    assert cli("run", "mol", "bbbp", "--data", str(data), "--method", "none", "--init",
               str(out / "backbone.safetensors"), *TINY, "--set", "final.epochs=1",
               "--set", "split=random", "--out", str(run)) == 0
    assert (f"backbone mol.resnet18 loaded from --init '{out / 'backbone.safetensors'}' "
            "(ResNet18 state dict, safetensors): 120 tensors, 0 missing") in (run / "log.txt").read_text()


@pytest.mark.slow
def test_a_resumed_mol_pretraining_ends_where_an_uninterrupted_one_does(tmp_path, cache_dir, monkeypatch):
    args = ["pretrain", "mol", "--corpus", str(NCI), "--steps", "4", "--set", "checkpoint_every=2", *TINY]
    assert cli(*args, "--out", str(tmp_path / "whole")) == 0
    crash_after(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="killed"):
        cli(*args, "--out", str(tmp_path / "cut"))
    monkeypatch.undo()
    assert cli("pretrain", "mol", "--resume", str(tmp_path / "cut"), "--quiet") == 0
    whole, cut = (load_file(tmp_path / p / "backbone.safetensors") for p in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    losses = [pd.read_csv(tmp_path / p / "losses.csv") for p in ("whole", "cut")]
    assert losses[0].equals(losses[1]) and len(losses[0]) == 4


def test_the_paper_pretrain_preset_takes_imagemols_sgd_steps():
    """ImageMol: SGD(lr 0.01, momentum 0.9, weight decay 1e-5) on the plain sum of its 7 losses.
    Ours: the mean (uniform λ = 1/7) under the preset's rate and decay. Three steps of each
    on the same losses (random quadratics) land on the same parameters."""
    from tapweight.commands import base_pretraining as pretrain

    cfg = pretrain.resolve("mol", "paper", options={"corpus": str(NCI)}).cfg
    assert cfg.method == "uniform" and len(cfg.objectives) == 7
    assert (cfg.options.image_size, cfg.pretrain.batch_size, cfg.pretrain.scheduler) == (224, 256, "constant")
    torch.manual_seed(0)
    targets = torch.randn(7, 5)
    start = torch.randn(5)

    def steps(lr, decay, weight):
        x = torch.nn.Parameter(start.clone())
        sgd = torch.optim.SGD([x], lr=lr, momentum=0.9, weight_decay=decay)
        for _ in range(3):
            sgd.zero_grad()
            (weight * ((x - targets) ** 2).sum(1)).sum().backward()
            sgd.step()
        return x.detach()

    imagemol = steps(0.01, 1e-5, 1.0)
    ours = steps(cfg.pretrain.lr, cfg.pretrain.weight_decay, 1 / 7)
    assert cfg.pretrain.momentum == 0.9 and torch.allclose(ours, imagemol, rtol=1e-5, atol=1e-7)
