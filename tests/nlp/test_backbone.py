"""The RoBERTa backbone: shapes, padding, --init weights, a local model folder, errors."""

import huggingface_hub.constants
import pytest
import torch
from transformers import RobertaForMaskedLM

from tapweight import TapweightError
from tapweight.job.checkpoint import save_weights
from tapweight_nlp.backbone import build_backbone, tiny_config
from tapweight_nlp.data import TextCorpus
from tapweight_nlp.objectives import build_mlm
from tapweight_nlp.tokenizer import load_tokenizer


def test_features_are_the_start_token_state(tiny):
    cfg, data, backbone = tiny
    batch = data.corpus_collate([data.corpus[i] for i in range(5)])
    backbone.eval()
    states = backbone.token_states(batch)
    features = backbone(batch)
    assert backbone.out_dim == 32
    assert states.shape == (5, batch["input_ids"].shape[1], 32)
    assert features.shape == (5, 32)
    torch.testing.assert_close(features, states[:, 0])


def test_padding_does_not_change_the_features(tiny):
    cfg, data, backbone = tiny
    backbone.eval()
    short, long = data.corpus[4], data.corpus[2]  # 4 and 13 words
    alone = data.corpus_collate([short])
    padded = data.corpus_collate([short, long])
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1]
    torch.testing.assert_close(backbone(alone)[0], backbone(padded)[0], atol=1e-5, rtol=1e-5)


def test_init_loads_saved_weights(tiny, tmp_path, nlp_config):
    cfg, data, backbone = tiny
    save_weights(backbone, tmp_path / "backbone.safetensors")
    loaded = build_backbone(nlp_config(init=str(tmp_path / "backbone.safetensors")))
    for (name, a), (_, b) in zip(backbone.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    torch.save({f"backbone.{k}": v for k, v in backbone.state_dict().items()}, tmp_path / "theta.pt")
    loaded = build_backbone(nlp_config(init=str(tmp_path / "theta.pt")))
    assert torch.equal(loaded.word_embeddings, backbone.word_embeddings)
    with pytest.raises(TapweightError, match="does not fit"):
        build_backbone(nlp_config("nlp.tiny_hidden_size=64", init=str(tmp_path / "theta.pt")))


def test_a_local_model_folder_loads_encoder_tokenizer_and_lm_head(tiny, tmp_path, nlp_config):
    cfg, data, _ = tiny
    saved = RobertaForMaskedLM(tiny_config(cfg.options))
    saved.save_pretrained(tmp_path / "model")
    data.corpus.tokenizer.save_pretrained(tmp_path / "model")
    cfg = nlp_config(f"nlp.model={tmp_path / 'model'}")
    tokenizer, how = load_tokenizer(cfg.options, [])
    assert "own" in how and len(tokenizer) == len(data.corpus.tokenizer)
    backbone = build_backbone(cfg)
    encoder = saved.roberta.state_dict()
    for name, value in backbone.encoder.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    mlm = build_mlm(backbone, TextCorpus([], tokenizer), cfg)
    assert torch.equal(mlm.dense.weight, saved.lm_head.dense.weight)
    assert torch.equal(mlm.layer_norm.weight, saved.lm_head.layer_norm.weight)
    assert torch.equal(mlm.bias, saved.lm_head.bias)


def test_an_unreachable_model_is_one_line_naming_the_fix(nlp_config, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = nlp_config("nlp.model=roberta-base")
    for build in (lambda: build_backbone(cfg), lambda: load_tokenizer(cfg.options, [])):
        with pytest.raises(TapweightError, match="--model") as err:
            build()
        assert "\n" not in str(err.value) and "roberta-base" in str(err.value)
