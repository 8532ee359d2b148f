"""``tapweight pretrain nlp`` with the tiny model: the tokenizer trained on the corpus is kept
beside the encoder, and a task run given both sees the token ids the encoder learned."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tapweight import Split, TapweightError
from tapweight_nlp.backbone import build_backbone
from tapweight_nlp.data import build_data
from tapweight_nlp.load import TextTable
from tapweight_nlp.tasks import DATASETS, task_spec
from tests.nlp.conftest import SENTENCES, TINY
from tests.test_cli import cli

SETS = [arg for s in TINY for arg in ("--set", s)]


@pytest.mark.slow
def test_pretrain_keeps_its_tokenizer_for_the_task_run(tmp_path, cache_dir, nlp_config):
    corpus = tmp_path / "corpus.txt"  # other text than the task's: another tokenizer
    corpus.write_text("\n".join(" ".join(reversed(s.split())) + " indeed" for s in SENTENCES * 5) + "\n")
    pre = tmp_path / "pre"
    assert cli("pretrain", "nlp", "--corpus", str(corpus), "--steps", "2", *SETS, "--set",
               "pretrain.batch_size=8", "--quiet", "--preset", "cpu", "--out", str(pre)) == 0
    assert (pre / "tokenizer" / "vocab.json").is_file() and "nlp.tokenizer" in (pre / "log.txt").read_text()

    texts = SENTENCES * 4
    table = TextTable(texts, np.array([[i % 2] for i in range(len(texts))], dtype=float), ("sst2",),
                      parts=np.full(len(texts), "train"), classes=("negative", "positive"))
    split = Split(np.arange(40), np.arange(40, 44), np.arange(44, 48))
    task = task_spec(DATASETS["sst2"])
    ours = nlp_config(f"nlp.tokenizer={pre / 'tokenizer'}", init=str(pre / "backbone.safetensors"))
    kept = build_data(ours, table, split, task).corpus.tokenizer
    own = build_data(nlp_config(), table, split, task).corpus.tokenizer  # trained on the task's text
    assert kept.get_vocab() != own.get_vocab()
    from transformers import RobertaTokenizer

    original = RobertaTokenizer.from_pretrained(str(pre / "tokenizer"))
    assert kept.get_vocab() == original.get_vocab()
    assert kept("a gorgeous movie indeed")["input_ids"] == original("a gorgeous movie indeed")["input_ids"]
    encoder, loaded = load_file(pre / "backbone.safetensors"), build_backbone(ours).state_dict()
    assert all(torch.equal(encoder[k], loaded[k]) for k in encoder)


def test_a_missing_tokenizer_folder_is_one_line(tmp_path, nlp_config):
    cfg = nlp_config(f"nlp.tokenizer={tmp_path}")
    table = TextTable(SENTENCES, np.zeros((12, 1)), ("sst2",), parts=np.full(12, "train"),
                      classes=("negative", "positive"))
    with pytest.raises(TapweightError, match="is not a tokenizer folder"):
        build_data(cfg, table, Split(np.arange(8), np.arange(8, 10), np.arange(10, 12)),
                   task_spec(DATASETS["sst2"]))
