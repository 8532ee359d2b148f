"""A pretrained ``--model`` folder, as roberta-base comes (a ``RobertaForMaskedLM`` saved with
``save_pretrained`` beside a byte-level BPE tokenizer, small here): it loads bit-identically
and strictly, the run log says what was loaded, and θ and w train with dropout on although
``from_pretrained`` hands the model over in eval mode."""

import logging

import pytest
import tokenizers
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

from tapweight import TapweightError
from tapweight.job import runner
from tapweight.method.engine import Engine
from tapweight.method.models import TaskModel
from tapweight_nlp import objectives
from tapweight_nlp.backbone import build_backbone
from tapweight_nlp.data import TextCorpus
from tapweight_nlp.objectives import build_mlm
from tapweight_nlp.tokenizer import SPECIAL_TOKENS
from tests.nlp.conftest import SENTENCES


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(folder, the saved RobertaForMaskedLM): weights, config and tokenizer files."""
    folder = tmp_path_factory.mktemp("roberta-like")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES, vocab_size=400, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    bpe.save_model(str(folder))
    RobertaTokenizerFast.from_pretrained(str(folder)).save_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    torch.manual_seed(0)
    model = RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=34, type_vocab_size=1))
    assert model.config.hidden_dropout_prob > 0  # RoBERTa's dropout, which training must use
    model.save_pretrained(str(folder))
    return folder, model


def without(folder, tmp_path, *names):
    """A copy of the model folder whose weights lack ``names``."""
    copy = tmp_path / "partial"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    weights = load_file(str(copy / "model.safetensors"))
    assert all(n in weights for n in names)
    save_file({k: v for k, v in weights.items() if k not in names}, str(copy / "model.safetensors"),
              metadata={"format": "pt"})
    return copy


def test_loads_bit_identically_and_the_log_says_what(pretrained, nlp_config, caplog):
    folder, saved = pretrained
    cfg = nlp_config(f"nlp.model={folder}")
    with caplog.at_level(logging.INFO):
        backbone = build_backbone(cfg)
        mlm = build_mlm(backbone, TextCorpus([], AutoTokenizer.from_pretrained(str(folder))), cfg)
    encoder = saved.roberta.state_dict()
    assert set(backbone.encoder.state_dict()) == set(encoder)
    for name, value in backbone.encoder.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    head = saved.lm_head
    for ours, theirs in ((mlm.dense, head.dense), (mlm.layer_norm, head.layer_norm)):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name
    assert torch.equal(mlm.bias, head.bias)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("tapweight")]
    source = f"--model '{folder}' (transformers RobertaForMaskedLM, local folder)"
    assert (f"encoder nlp.roberta loaded from {source}: {len(encoder)} tensors, 0 missing, "
            "0 of another shape, 5 not used") in lines
    assert any(line.startswith("encoder nlp.roberta: not used") and "lm_head.dense.weight" in line
               for line in lines)
    assert f"nlp.mlm head loaded from {source}: 5 tensors, 0 missing, 0 of another shape, 0 not used" in lines
    assert "LOAD REPORT" not in caplog.text and "\x1b" not in caplog.text  # transformers' table kept out


def test_missing_encoder_tensors_are_an_error_naming_them(pretrained, nlp_config, tmp_path, caplog):
    folder, saved = pretrained
    partial = without(folder, tmp_path, "roberta.encoder.layer.0.attention.self.query.weight")
    with pytest.raises(TapweightError) as err:
        build_backbone(nlp_config(f"nlp.model={partial}"))
    message = str(err.value)
    assert "missing encoder.layer.0.attention.self.query.weight" in message
    assert "nlp.strict_load=false" in message and "\n" not in message
    with caplog.at_level(logging.INFO):
        backbone = build_backbone(nlp_config(f"nlp.model={partial}", "nlp.strict_load=false"))
    assert "starts 1 tensors from scratch" in caplog.text
    assert torch.equal(backbone.encoder.encoder.layer[0].attention.self.key.weight,
                       saved.roberta.encoder.layer[0].attention.self.key.weight)


def test_a_missing_mlm_head_is_an_error_unless_strict_load_is_off(pretrained, nlp_config, tmp_path, caplog):
    folder, saved = pretrained
    partial = without(folder, tmp_path, "lm_head.dense.weight")
    cfg = nlp_config(f"nlp.model={partial}")
    backbone = build_backbone(cfg)  # the encoder is complete
    corpus = TextCorpus([], AutoTokenizer.from_pretrained(str(partial)))
    with pytest.raises(TapweightError, match="does not fit nlp.mlm head: 1 tensors missing dense.weight"):
        build_mlm(backbone, corpus, cfg)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        mlm = build_mlm(backbone, corpus, nlp_config(f"nlp.model={partial}", "nlp.strict_load=false"))
    assert "nlp.mlm head starts 1 tensors from scratch" in caplog.text
    assert not torch.equal(mlm.dense.weight, saved.lm_head.dense.weight)
    assert torch.equal(mlm.dense.bias, saved.lm_head.dense.bias)


@pytest.fixture
def text_data(tmp_path):
    """An SST-2-like data folder (train/dev/test tsv files) of the test sentences."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, repeat in (("train", 4), ("dev", 2), ("test", 1)):
        rows = [f"{s}\t{i % 2}" for i, s in enumerate(SENTENCES * repeat)]
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def record_modes(monkeypatch):
    """Patch in probes: SimCSE's two views and θ's modes in level I, w's modes in level II,
    and (grad enabled, train mode) of every TaskModel forward."""
    seen = {"views": [], "theta": [], "w": [], "task": []}
    forward_cl = objectives.ContrastiveLearning.forward

    def cl(self, backbone, batch):
        n = batch["input_ids"].shape[0]
        hook = self.mlp.register_forward_hook(
            lambda m, i, out: seen["views"].append((out[:n] - out[n:]).abs().max().item()))
        seen["theta"].append(all(m.training for m in backbone.modules()))
        try:
            return forward_cl(self, backbone, batch)
        finally:
            hook.remove()

    finetune_loss = Engine.finetune_loss

    def level_ii(self, x, y, seed, model=None):
        seen["w"].append(all(m.training for m in (model or self.w).modules()))
        return finetune_loss(self, x, y, seed, model)

    task_forward = TaskModel.forward

    def task(self, inputs):
        seen["task"].append((torch.is_grad_enabled(), all(m.training for m in self.modules())))
        return task_forward(self, inputs)

    monkeypatch.setattr(objectives.ContrastiveLearning, "forward", cl)
    monkeypatch.setattr(Engine, "finetune_loss", level_ii)
    monkeypatch.setattr(TaskModel, "forward", task)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tapweight", "none"])
def test_a_pretrained_model_trains_with_dropout_and_is_scored_without(pretrained, text_data, tmp_path,
                                                                      cache_dir, monkeypatch, method):
    folder, _ = pretrained
    seen = record_modes(monkeypatch)
    sets = [f"nlp.model={folder}", "nlp.max_length=32", "pretrain.batch_size=8", "finetune.batch_size=8",
            "reweight.batch_size=8", "final.batch_size=16", "final.epochs=2"]
    job = runner.resolve("nlp", "sst2", preset="cpu", sets=sets, options={
        "data": str(text_data), "steps": 2, "method": method, "split": "given"})
    runner.run(job, tmp_path / "run", quiet=True)
    if method == "tapweight":
        assert len(seen["theta"]) >= 2 and all(seen["theta"])  # level I (and the hypergradient's replays)
        assert min(seen["views"]) > 1e-4  # SimCSE's two views differ: dropout is on
        assert len(seen["w"]) == 2 and all(seen["w"])  # level II
    training = [mode for grad, mode in seen["task"] if grad]
    scoring = [mode for grad, mode in seen["task"] if not grad]
    assert training and all(training)  # levels II, III and the final fine-tune, from its first epoch
    assert scoring and not any(scoring)  # validation and test scores
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"encoder nlp.roberta loaded from --model '{folder}'" in log
    assert ("nlp.mlm head loaded from" in log) == (method == "tapweight")
