"""Shared fixtures: the real SST-2 files, a session cache for tokenizers, tiny configs."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SST2 = DATA / "text" / "sst2"

#: a model small enough for unit tests: one layer of width 32 over a 600-token vocabulary
TINY = ["nlp.model=tiny", "nlp.tiny_vocab_size=600", "nlp.tiny_hidden_size=32",
        "nlp.tiny_layers=1", "nlp.tiny_heads=2", "nlp.max_length=32"]

SENTENCES = [
    "a charming and often affecting journey", "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding",
    "it 's slow -- very , very slow", "a sometimes tedious film", "the best film of the year",
    "an utterly incompetent conclusion", "a gorgeous , witty , seductive movie",
    "this is a film well worth seeing", "the movie is a disaster from start to finish",
    "a masterpiece four years in the making", "nothing about it is memorable",
]


@pytest.fixture
def nlp_config(cache_dir):
    """A resolved ``nlp`` config with the tiny test model, built like the runner builds one."""
    from tapweight.job.runner import resolve

    def make(*sets: str, task: str = "sst2", **options):
        return resolve("nlp", task, preset="cpu", options=options, sets=[*TINY, *sets]).cfg

    return make


@pytest.fixture
def tiny(nlp_config):
    """(cfg, data, backbone) for a small SST-2-like corpus of the sentences above."""
    import numpy as np

    from tapweight import Split
    from tapweight_nlp.backbone import build_backbone
    from tapweight_nlp.data import build_data
    from tapweight_nlp.load import TextTable
    from tapweight_nlp.tasks import DATASETS, task_spec

    cfg = nlp_config()
    texts = SENTENCES * 4
    labels = np.array([[i % 2] for i in range(len(texts))], dtype=float)
    table = TextTable(texts, labels, ("sst2",), parts=np.full(len(texts), "train"),
                      classes=("negative", "positive"))
    n = len(texts)
    split = Split(np.arange(n - 8), np.arange(n - 8, n - 4), np.arange(n - 4, n))
    data = build_data(cfg, table, split, task_spec(DATASETS["sst2"]))
    return cfg, data, build_backbone(cfg)
