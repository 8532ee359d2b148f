"""``tapweight pretrain``: level I alone on an unlabelled corpus, an encoder for ``run --init``,
resume, and the one-line errors; on the toy domain (the molecular one: tests/mol)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tapweight.commands import base_pretraining as pretrain
from tapweight.job.checkpoint import load_state
from tapweight.method.engine import Engine
from tapweight.plugin.manager import build_registry
from tests.test_cli import cli


def crash_after(monkeypatch, steps: int) -> None:
    """Make ``Engine.step`` raise (a crash) once ``steps`` steps are done."""
    step = Engine.step

    def crashing(engine):
        if engine.step_count == steps:
            raise RuntimeError("killed")
        return step(engine)

    monkeypatch.setattr(Engine, "step", crashing)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.npy"
    np.save(path, np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32))
    return path


def test_pretrain_writes_an_encoder_that_run_init_starts_from(toy, corpus, tmp_path, capsys):
    out = tmp_path / "pre"
    assert cli("pretrain", "toy", "--corpus", str(corpus), "--steps", "4", "--quiet", "--out", str(out)) == 0
    losses = pd.read_csv(out / "losses.csv")
    assert losses["step"].tolist() == [1, 2, 3, 4] and {"loss_denoise", "loss_spread"} <= set(losses)
    assert "finetune_loss" not in losses  # level I alone
    encoder = load_file(out / "backbone.safetensors")
    theta = load_state(out / "checkpoint.pt")["theta"]
    assert theta and all(torch.equal(encoder[k], theta[f"backbone.{k}"]) for k in encoder)
    torch.manual_seed(0)  # the run's seed: its initial weights, which training moved
    start = toy.Backbone(8, 16).state_dict()
    assert not torch.equal(start["net.0.weight"], encoder["net.0.weight"])
    assert str(out / "backbone.safetensors") in capsys.readouterr().out

    run = tmp_path / "run"
    assert cli("run", "toy", "blobs", "--method", "none", "--init", str(out / "backbone.safetensors"),
               "--quiet", "--out", str(run)) == 0
    assert "loaded from --init" in (run / "log.txt").read_text()


def test_the_encoder_run_init_loads_is_the_pretrained_one(toy, corpus, tmp_path):
    out = tmp_path / "pre"
    assert cli("pretrain", "toy", "--corpus", str(corpus), "--steps", "2", "--quiet", "--out", str(out)) == 0
    job = pretrain.resolve("toy", "cpu", options={"corpus": str(corpus), "init": str(out / "backbone.safetensors")})
    loaded = job.registry.get("backbones", "toy.mlp").build(job.cfg, None).state_dict()
    encoder = load_file(out / "backbone.safetensors")
    assert encoder.keys() == loaded.keys() and all(torch.equal(encoder[k], loaded[k]) for k in encoder)


def test_a_resumed_pretraining_run_ends_where_an_uninterrupted_one_does(toy, corpus, tmp_path, monkeypatch):
    options = {"corpus": str(corpus), "steps": 6, "checkpoint_every": 3, "method": "fixed",
               "weights": [0.7, 0.3]}
    pretrain.pretrain(pretrain.resolve("toy", "cpu", options=options), tmp_path / "whole", quiet=True)

    crash_after(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain.pretrain(pretrain.resolve("toy", "cpu", options=options), tmp_path / "cut", quiet=True)
    assert load_state(tmp_path / "cut" / "checkpoint.pt")["step"] == 3
    monkeypatch.undo()
    assert cli("resume", str(tmp_path / "cut"), "--quiet") == 0  # as the interrupt message says
    whole, cut = (load_file(tmp_path / p / "backbone.safetensors") for p in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert pd.read_csv(tmp_path / "cut" / "losses.csv").equals(pd.read_csv(tmp_path / "whole" / "losses.csv"))
    assert "resumed seed 0 at step 3" in (tmp_path / "cut" / "log.txt").read_text()


def test_gradnorm_needs_no_task_so_it_pretrains_a_base(toy, corpus, tmp_path):
    """A weighting that reads no validation gradient runs in base pretraining and moves λ."""
    out = tmp_path / "pre"
    assert cli("pretrain", "toy", "--corpus", str(corpus), "--method", "gradnorm", "--steps", "4", "--quiet",
               "--out", str(out)) == 0
    weights = pd.read_csv(out / "weights.csv")
    assert weights["denoise"].iloc[0] == 0.5 and weights["denoise"].iloc[-1] != 0.5
    assert "grad_norm_denoise" in pd.read_csv(out / "losses.csv").columns


def test_presets_and_defaults(toy, corpus):
    cfg = pretrain.resolve("toy", "cpu", options={"corpus": str(corpus)}).cfg
    assert cfg.method == "uniform" and cfg.task == ""
    assert cfg.steps == 6 and cfg.pretrain.batch_size == 16  # the cpu preset, then the pretrain preset over it
    assert pretrain.resolve("toy", "paper", options={"corpus": str(corpus)}).cfg.pretrain.batch_size == 32


@pytest.mark.parametrize("args, message", [
    ((), "needs --corpus FILE"),
    (("--method", "tapweight"), "weights that need no task"),
    (("--method", "cosine"), "weights that need no task"),
    (("--method", "none"), "not 'none'"),
    (("--method", "single:nope"), "unknown objective 'nope'"),
    (("--preset", "huge"), "no preset 'huge'"),
])
def test_user_errors_are_one_line(toy, corpus, tmp_path, capsys, args, message):
    corpus_arg = () if not args else ("--corpus", str(corpus))
    assert cli("pretrain", "toy", *corpus_arg, *args, "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_bad_corpus_leaves_no_folder(toy, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy")
    assert cli("pretrain", "toy", "--corpus", str(bad), "--out", str(tmp_path / "x")) == 2
    assert "is not a .npy file" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_resume_refuses_a_task_run_and_another_domain(toy, corpus, tmp_path, capsys):
    assert cli("run", "toy", "blobs", "--quiet", "--steps", "1", "--out", str(tmp_path / "run")) == 0
    assert cli("pretrain", "toy", "--resume", str(tmp_path / "run")) == 2
    assert "is a run of toy/blobs, not toy/pretrain" in capsys.readouterr().err


def test_a_domain_without_a_corpus_reader_is_refused(toy, corpus):
    registry = build_registry()
    registry.tables["domains"]["toy"] = dataclasses.replace(registry.tables["domains"]["toy"], build_corpus=None)
    with pytest.raises(Exception, match="cannot read a corpus without labels"):
        pretrain.resolve("toy", "cpu", options={"corpus": str(corpus)}, registry=registry)


def test_predict_and_export_refuse_a_pretraining_folder_in_one_line(toy, corpus, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert cli("pretrain", "toy", "--corpus", str(corpus), "--steps", "1", "--quiet", "--out", str(pre)) == 0
    capsys.readouterr()
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(["0.5"] * 8) + "\n")
    assert cli("predict", str(pre), "--data", str(rows)) == 2
    assert cli("export", str(pre), "--format", "state") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("is a `tapweight pretrain` folder" in line for line in lines)
