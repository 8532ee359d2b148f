"""``tapweight run nlp custom``: a user's own labelled text, its own column names and string
labels, run, predicted and exported to a Hugging Face sequence classifier that ``pipeline()``
loads; a folder of train/dev/test files trains on train and selects on dev."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tapweight import TapweightError
from tapweight.commands.export import export
from tapweight.commands.predict import predict
from tapweight.job.runner import resolve, run, run_job
from tests.nlp.conftest import SENTENCES, TINY

SETS = [*TINY, "steps=2", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8",
        "final.epochs=2", "final.batch_size=16"]
COLUMNS = ["nlp.text_column=review", "nlp.label_column=sentiment"]
MOODS = ("pos", "neutral", "neg")


def reviews(n: int) -> pd.DataFrame:
    """``n`` reviews with string labels of three classes, in the user's own column names."""
    return pd.DataFrame({"id": range(n), "review": [SENTENCES[i % len(SENTENCES)] + f" {i}" for i in range(n)],
                         "sentiment": [MOODS[i % 3] for i in range(n)]})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("custom")
    reviews(60).to_csv(folder / "my_reviews.csv", index=False)
    before = digest(folder / "my_reviews.csv")
    job = resolve("nlp", "custom", preset="cpu", options={"data": str(folder / "my_reviews.csv")},
                  sets=[*SETS, *COLUMNS])
    run(job, folder / "run", quiet=True)
    assert digest(folder / "my_reviews.csv") == before  # the user's file is read, never rewritten
    return folder / "run"


@pytest.mark.slow
def test_classes_come_from_the_string_labels_and_name_everything(custom_run):
    info = json.loads((custom_run / "seed0" / "model.json").read_text())
    assert info["loss"] == "ce" and info["classes"] == ["neg", "neutral", "pos"] and info["n_outputs"] == 3
    assert info["label_names"] == ["sentiment"] and info["metric"] == "accuracy"
    summary = json.loads((custom_run / "metrics.json").read_text())
    assert summary["name"] == "my_reviews" and summary["task"] == "custom"
    assert {"test_f1", "test_mcc"} <= set(summary["seeds"]["0"])
    written = pd.read_csv(custom_run / "seed0" / "predictions.csv")
    assert set(written["pred_sentiment_class"]) <= {"neg", "neutral", "pos"}
    np.testing.assert_allclose(written[["prob_neg", "prob_neutral", "prob_pos"]].sum(axis=1), 1, rtol=1e-5)
    log = (custom_run / "log.txt").read_text()
    assert "3-class classification (neg, neutral, pos)" in log and "split files" in log


@pytest.mark.slow
def test_predict_reads_the_runs_text_column(custom_run, tmp_path):
    new = reviews(6).drop(columns="sentiment")
    new.to_csv(tmp_path / "new.csv", index=False)
    got = predict(custom_run, tmp_path / "new.csv", device="cpu")
    assert list(got.columns) == ["row", "input", "pred_sentiment", "pred_sentiment_class", "prob_neg",
                                 "prob_neutral", "prob_pos", "error"]
    assert got["pred_sentiment_class"].tolist() == [("neg", "neutral", "pos")[i] for i in got["pred_sentiment"]]
    new.rename(columns={"review": "body"}).to_csv(tmp_path / "body.csv", index=False)
    with pytest.raises(TapweightError, match="no text column 'review'.*rename the column to 'review'"):
        predict(custom_run, tmp_path / "body.csv", device="cpu")
    again = predict(custom_run, tmp_path / "body.csv", device="cpu", columns={"text_column": "body"})
    pd.testing.assert_frame_equal(again, got)
    with pytest.raises(TapweightError, match="--smiles-column names a column the 'nlp' domain does not read"):
        predict(custom_run, tmp_path / "body.csv", device="cpu", columns={"smiles_column": "smiles"})


@pytest.mark.slow
def test_hf_export_is_a_sequence_classifier_that_pipeline_reproduces(custom_run, tmp_path):
    from transformers import AutoTokenizer, RobertaForSequenceClassification, pipeline

    export(custom_run, "hf", tmp_path / "hf", finetuned=True)
    model = RobertaForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert model.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert model.config.label2id == {"neg": 0, "neutral": 1, "pos": 2}
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.model_max_length == model.config.max_position_embeddings - 2 == 32
    texts = SENTENCES[:5]
    pd.DataFrame({"review": texts}).to_csv(tmp_path / "five.csv", index=False)
    ours = predict(custom_run, tmp_path / "five.csv", device="cpu")
    classify = pipeline("text-classification", model=str(tmp_path / "hf"), top_k=None, device="cpu")
    theirs = classify(texts)
    for row, scores in zip(ours.itertuples(), theirs):
        probs = {s["label"]: s["score"] for s in scores}
        assert max(probs, key=probs.get) == row.pred_sentiment_class
        np.testing.assert_allclose([probs[c] for c in ("neg", "neutral", "pos")],
                                   [row.prob_neg, row.prob_neutral, row.prob_pos], rtol=1e-4, atol=1e-5)
    long = classify(" ".join(SENTENCES * 20), truncation=True)  # longer than the position table
    assert len(long) == 1 or len(long[0]) == 3


@pytest.mark.slow
def test_a_folder_of_train_dev_test_trains_on_train_and_selects_on_dev(tmp_path, cache_dir):
    data = tmp_path / "data"
    data.mkdir()
    rows = reviews(60)
    for name, part in (("train", rows[:36]), ("dev", rows[36:48]), ("test", rows[48:])):
        part.to_csv(data / f"{name}.csv", index=False)
    job = resolve("nlp", "custom", preset="cpu", options={"data": str(data)}, sets=[*SETS, *COLUMNS])
    run(job, tmp_path / "run", quiet=True)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert ("split given: train on the train file (36 rows), select on the dev file (12), "
            "test on the test file (12)") in log
    assert "seed 0: split files: train 36, val 12 (model selection), test 12 rows" in log


def test_the_task_type_comes_from_the_labels_or_the_options(tmp_path, cache_dir):
    reviews(30).to_csv(tmp_path / "r.csv", index=False)
    options = {"data": str(tmp_path / "r.csv")}
    task = resolve("nlp", "custom", preset="cpu", options=options, sets=[*TINY, *COLUMNS]).task
    assert (task.loss, task.classes, task.title) == ("ce", ("neg", "neutral", "pos"), "r")
    named = resolve("nlp", "custom", preset="cpu", options=options, sets=[
        *TINY, *COLUMNS, "nlp.classes=[pos,neutral,neg]", "nlp.name=mine", "nlp.metric=mcc"]).task
    assert (named.classes, named.title, named.metric, named.extra_metrics) == (
        ("pos", "neutral", "neg"), "mine", "mcc", ("accuracy", "f1"))
    scores = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [0.5, 1.25, 3.0, 2.75]})
    scores.to_csv(tmp_path / "s.csv", index=False)
    task = resolve("nlp", "custom", preset="cpu", options={"data": str(tmp_path / "s.csv")}, sets=TINY).task
    assert (task.loss, task.metric, task.extra_metrics) == ("mse", "rmse", ("mae", "r2"))
    with pytest.raises(TapweightError, match="nlp.metric='roc_auc' does not score a multi-class task"):
        resolve("nlp", "custom", preset="cpu", options=options, sets=[*TINY, *COLUMNS, "nlp.metric=roc_auc"])
    with pytest.raises(TapweightError, match="no label column 'label'.*nlp.label_column=NAME"):
        resolve("nlp", "custom", preset="cpu", options=options, sets=TINY)
    with pytest.raises(TapweightError, match="pass --data FILE"):
        resolve("nlp", "custom", preset="cpu", sets=TINY)


@pytest.mark.slow
def test_a_saved_config_fits_the_same_task_without_the_data(custom_run):
    (custom_run.parent / "my_reviews.csv").rename(custom_run.parent / "moved.csv")
    job = run_job(custom_run)
    assert (job.task.loss, job.task.classes, job.task.title) == ("ce", ("neg", "neutral", "pos"), "my_reviews")


@pytest.mark.slow
def test_compare_and_resume_name_the_runs_after_the_data(tmp_path, cache_dir):
    from tapweight.commands.compare import compare

    reviews(45).to_csv(tmp_path / "my_reviews.csv", index=False)
    sets = [*SETS, *COLUMNS, "final.epochs=1"]
    table = compare("nlp", ["custom"], ["none", "uniform"], [0], tmp_path / "cmp", None, "cpu", None,
                    {"data": str(tmp_path / "my_reviews.csv")}, sets, True)
    assert set(table["task"]) == {"my_reviews"} and (tmp_path / "cmp" / "my_reviews-uniform" / "seed0").is_dir()
    assert "## my_reviews: test accuracy" in (tmp_path / "cmp" / "comparison.md").read_text()
    job = resolve("nlp", "custom", "paper", str(tmp_path / "cmp" / "my_reviews-uniform" / "config.yaml"))
    again = run(job, tmp_path / "cmp" / "my_reviews-uniform", quiet=True, resume=True)  # finished: reused
    assert again["name"] == "my_reviews" and again["seeds"][0]["test"] == table["test_mean"].iloc[1]
