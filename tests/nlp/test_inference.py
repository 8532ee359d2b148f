"""A finished NLP run: predict new texts, export a Hugging Face model folder.

One small run (the tiny model on an SST-2-like folder, two global steps) serves every test.
The export is loaded by transformers' ``AutoModel``/``AutoTokenizer`` and must give the
run's backbone features.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from tapweight.commands.export import export
from tapweight.commands.predict import predict
from tapweight.job.runner import resolve, run, run_job
from tapweight.job.saved import load_final
from tests.nlp.conftest import SENTENCES, TINY

pytestmark = pytest.mark.slow
SETS = [*TINY, "steps=2", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8",
        "final.epochs=1", "final.batch_size=16"]


@pytest.fixture(scope="module")
def nlp_run(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("nlp")
    data = folder / "sst2"
    data.mkdir()
    rows = [(s, i % 2) for i, s in enumerate(SENTENCES * 5)]
    pd.DataFrame(rows[:48], columns=["sentence", "label"]).to_csv(data / "train.tsv", sep="\t", index=False)
    pd.DataFrame(rows[48:], columns=["sentence", "label"]).to_csv(data / "dev.tsv", sep="\t", index=False)
    job = resolve("nlp", "sst2", preset="cpu", options={"data": str(data)}, sets=SETS)
    run(job, folder / "run", quiet=True)
    return folder / "run"


def test_predict_scores_texts_as_the_run_did(nlp_run, tmp_path):
    expected = pd.read_csv(nlp_run / "seed0" / "predictions.csv")
    texts = expected["input"].tolist()
    pd.DataFrame({"sentence": [texts[0], "", *texts[1:]]}).to_csv(tmp_path / "new.csv", index=False)
    got = predict(nlp_run, tmp_path / "new.csv", device="cpu")
    assert list(got.columns) == ["row", "input", "pred_sst2", "pred_sst2_class", "prob_negative",
                                 "prob_positive", "error"]
    assert got["error"].tolist()[:2] == ["", "empty text"] and got["pred_sst2"].isna().tolist()[:2] == [False, True]
    valid = got[got["error"] == ""]
    assert valid["pred_sst2"].tolist() == expected["pred_sst2"].astype(int).tolist()
    assert valid["pred_sst2_class"].tolist() == [("negative", "positive")[i] for i in valid["pred_sst2"]]
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n")  # one text per line
    again = predict(nlp_run, tmp_path / "new.txt", device="cpu")
    np.testing.assert_allclose(again["prob_positive"], valid["prob_positive"], rtol=1e-5)


def test_predictor_folder_holds_the_runs_tokenizer(nlp_run):
    saved = load_final(run_job(nlp_run), nlp_run, 0)
    dataset = saved.predictor.dataset(SENTENCES[:3])
    batch, _ = saved.predictor.collate([dataset[i] for i in range(3)])
    tokenizer = AutoTokenizer.from_pretrained(nlp_run / "seed0" / "predictor")
    direct = tokenizer(SENTENCES[:3], padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert torch.equal(batch["input_ids"], direct["input_ids"])
    assert len(tokenizer) < 600  # the tiny BPE trained on this run's corpus, not a hub tokenizer


@pytest.mark.parametrize("finetuned", [False, True], ids=["encoder", "finetuned"])
def test_hf_export_loads_with_automodel_and_gives_the_backbones_features(nlp_run, tmp_path, finetuned):
    files = export(nlp_run, "hf", tmp_path / "hf", finetuned=finetuned)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in files}
    assert ("task_head.safetensors" in {f.name for f in files}) == finetuned
    encoder = AutoModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    inputs = tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    job = run_job(nlp_run)
    saved = load_final(job, nlp_run, 0)
    backbone = saved.model.backbone if finetuned else saved.predictor.backbone()
    if not finetuned:
        backbone.load_state_dict(load_file(str(nlp_run / "seed0" / "backbone.safetensors")))
    with torch.no_grad():
        theirs = encoder(**inputs).last_hidden_state[:, 0]
        ours = backbone.eval()({k: inputs[k] for k in ("input_ids", "attention_mask")})
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
        if finetuned:  # the head on those features gives the run's outputs
            head = torch.nn.Linear(theirs.shape[1], 2)
            head.load_state_dict(load_file(str(tmp_path / "hf" / "task_head.safetensors")))
            torch.testing.assert_close(head(theirs), saved.model.eval()(
                {k: inputs[k] for k in ("input_ids", "attention_mask")}), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,text,columns,expected", [
    ("new.txt", "good film\n\nbad film\n", ("sentence",), ["good film", "", "bad film"]),
    ("new.tsv", "sentence1\tsentence2\na\tb\n\nc\td\n", ("sentence1", "sentence2"), [("a", "b"), ("", ""), ("c", "d")]),
    ("new.csv", "sentence,label\ngood film,1\n\nbad film,0\n", ("sentence",), ["good film", "", "bad film"]),
])
def test_a_blank_line_is_an_empty_text_so_row_numbers_stay_the_files(tmp_path, name, text, columns, expected):
    from tapweight_nlp.inference import read_texts
    from tapweight_nlp.plugin import NlpOptions

    (tmp_path / name).write_text(text)
    read = read_texts(str(tmp_path / name), columns, NlpOptions())
    assert list(read.inputs) == expected and read.errors == ["", "empty text", ""]
