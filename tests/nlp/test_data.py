"""Loading text data sets (real SST-2 files, csv/tsv/json we write), the GLUE split
protocol, the offline error, and the batches build_data makes."""

import csv
import json

import datasets
import numpy as np
import pytest
import torch

from tapweight import Split, TapweightError
from tapweight_nlp import load
from tapweight_nlp.data import build_data, given_split, glue_split
from tapweight_nlp.load import load_table
from tapweight_nlp.tasks import DATASETS, task_spec
from tests.nlp.conftest import SENTENCES, SST2

SST2_TASK = task_spec(DATASETS["sst2"])


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    class Cfg:  # only what the loader reads
        data = str(SST2)
        options = type("Options", (), {"text_column": "", "pair_column": "", "label_column": "",
                                       "header": True, "columns": [], "label_base": 0})

    return load_table(DATASETS["sst2"], Cfg)


def test_real_sst2_files(sst2):
    # train.tsv + dev.tsv are GLUE's training set (split 9:1), test.tsv is GLUE's dev set
    assert len(sst2.inputs) == 60614 + 6735 + 872
    parts, counts = np.unique(sst2.parts, return_counts=True)
    assert dict(zip(parts, counts)) == {"train": 60614, "dev": 6735, "test": 872}
    assert sst2.labels.shape == (68221, 1) and set(np.unique(sst2.labels)) == {0.0, 1.0}
    assert sst2.classes == ("negative", "positive")
    assert sst2.notes == ("read train.tsv (60614 rows) as train, dev.tsv (6735 rows) as dev, "
                          "test.tsv (872 rows) as test",)
    first_test = int(np.flatnonzero(sst2.parts == "test")[0])
    assert sst2.inputs[first_test].startswith("it 's a charming and often affecting journey")
    assert sst2.labels[first_test, 0] == 1


def test_glue_split_tests_on_glue_dev_and_splits_the_rest_8_to_1(sst2):
    split = glue_split(sst2, seed=0)
    assert np.array_equal(np.sort(split.test), np.flatnonzero(sst2.parts == "test"))
    pool = np.concatenate([split.train, split.val])
    assert len(pool) == 67349 and len(np.unique(pool)) == 67349
    assert not np.isin(pool, split.test).any()
    assert len(split.val) == round(67349 / 9)
    again, other = glue_split(sst2, seed=0), glue_split(sst2, seed=1)
    assert np.array_equal(again.val, split.val)
    assert not np.array_equal(other.val, split.val)
    assert np.array_equal(np.sort(other.test), np.sort(split.test))


def test_given_split_keeps_the_files(sst2):
    split = given_split(sst2, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (60614, 6735, 872)


def write_tsv(path, header, rows):
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")


def test_glue_layout_unlabelled_test_and_sentence_pairs(tmp_path, nlp_config):
    header = ("sentence1", "sentence2", "label")
    pairs = [(f'he said "{a}"', b, i % 2) for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:]))]
    write_tsv(tmp_path / "train.tsv", header, pairs[:8])
    write_tsv(tmp_path / "dev.tsv", header, pairs[8:])
    write_tsv(tmp_path / "test.tsv", ("index", "sentence1", "sentence2"),
              [(i, a, b) for i, (a, b, _) in enumerate(pairs)])
    table = load_table(DATASETS["mrpc"], nlp_config(task="mrpc", data=str(tmp_path)))
    assert list(table.parts) == ["train"] * 8 + ["test"] * 3  # GLUE dev is the test set
    assert any("dev split is the test set" in n for n in table.notes)
    assert any("no labels" in n for n in table.notes)
    assert table.notes[-1] == "read train.tsv (8 rows) as train, dev.tsv (3 rows) as test"  # which file fed what
    assert table.inputs[0] == ('he said "a charming and often affecting journey"',
                               "unflinchingly bleak and desperate")
    with pytest.raises(TapweightError, match="split 'given' needs"):
        given_split(table, 0)


def test_one_csv_file_with_class_names_and_a_bad_row(tmp_path, nlp_config):
    with open(tmp_path / "rte.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "label"])
        writer.writerows([a, b, "entailment" if i % 2 else "NOT_ENTAILMENT"]
                         for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:])))
        writer.writerow(["", "empty first text", "entailment"])
    table = load_table(DATASETS["rte"], nlp_config(task="rte", data=str(tmp_path / "rte.csv")))
    assert len(table.inputs) == 11 and set(table.parts) == {"train"}
    assert table.labels[:4, 0].tolist() == [1, 0, 1, 0]  # class ids in ("entailment", "not_...")
    assert any("skipped 1 rows" in n for n in table.notes)
    split = glue_split(table, 0)  # no dev/test: 8:1:1 at random
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(11))
    (tmp_path / "bad.csv").write_text("sentence1,sentence2,label\na,b,maybe\n")
    with pytest.raises(TapweightError, match="unknown label 'maybe'.*entailment, not_entailment"):
        load_table(DATASETS["rte"], nlp_config(task="rte", data=str(tmp_path / "bad.csv")))
    (tmp_path / "ragged.csv").write_text("sentence1,sentence2,label\na,b,1\na , b , c,d,e,1\n")
    with pytest.raises(TapweightError, match="could not read .*ragged.csv' as csv: Error tokenizing"):
        load_table(DATASETS["rte"], nlp_config(task="rte", data=str(tmp_path / "ragged.csv")))


def test_json_regression_data_and_its_batches(tmp_path, nlp_config):
    def lines(rows):
        return "\n".join(json.dumps({"s1": a, "s2": b, "score": s}) for a, b, s in rows)

    rows = [(a, b, round(0.37 * i, 2)) for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:]))]
    (tmp_path / "train.jsonl").write_text(lines(rows[:9]))
    (tmp_path / "validation.jsonl").write_text(lines(rows[9:]))
    cfg = nlp_config("nlp.text_column=s1", "nlp.pair_column=s2", "nlp.label_column=score",
                     task="stsb", data=str(tmp_path))
    table = load_table(DATASETS["stsb"], cfg)
    assert table.classes == () and table.labels[:, 0].tolist() == [s for _, _, s in rows]
    data = build_data(cfg, table, glue_split(table, 0), task_spec(DATASETS["stsb"]))
    inputs, labels = data.task_collate([data.test[i] for i in range(2)])
    assert labels.dtype == torch.float32 and labels.shape == (2, 1)
    assert labels[:, 0].tolist() == pytest.approx([s for _, _, s in rows[9:11]])
    tokens = data.corpus.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert tokens.count("</s>") == 3  # both sentences, RoBERTa's pair layout


def test_missing_columns_name_the_columns_and_the_option(tmp_path, nlp_config):
    (tmp_path / "train.csv").write_text("review,stars\ngood,1\n")
    with pytest.raises(TapweightError, match="no column 'sentence'.*review, stars.*nlp.text_column"):
        load_table(DATASETS["sst2"], nlp_config(data=str(tmp_path)))
    with pytest.raises(TapweightError, match="no label column 'label'.*nlp.label_column"):
        load_table(DATASETS["sst2"], nlp_config("nlp.text_column=review", data=str(tmp_path)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(TapweightError, match="no train/dev/test files"):
        load_table(DATASETS["sst2"], nlp_config(data=str(tmp_path / "other")))


def test_a_folder_without_labelled_train_rows_is_refused_naming_what_it_read(tmp_path, nlp_config):
    """dev and test but no train file used to train on dev without a word."""
    rows = [(s, i % 2) for i, s in enumerate(SENTENCES)]
    write_tsv(tmp_path / "dev.tsv", ("sentence", "label"), rows[:8])
    write_tsv(tmp_path / "test.tsv", ("sentence", "label"), rows[8:])
    with pytest.raises(TapweightError) as err:
        load_table(DATASETS["sst2"], nlp_config(data=str(tmp_path)))
    assert str(err.value) == (f"folder '{tmp_path}' has no train file (looked for train.tsv, train.csv, train.json, "
                              "train.jsonl, train.parquet; found: dev.tsv, test.tsv): add it, or pass one labelled "
                              "file as --data FILE to split it 8:1:1")
    one = load_table(DATASETS["sst2"], nlp_config(data=str(tmp_path / "dev.tsv")))  # the stated choice
    assert set(one.parts) == {"train"} and one.notes[-1] == "read dev.tsv (8 rows) as train"
    write_tsv(tmp_path / "train.tsv", ("sentence", "label"), [(s, "") for s, _ in rows])
    with pytest.raises(TapweightError, match=r"has no labelled train rows \(train.tsv: 0 labelled train rows, "
                                             r"dev.tsv: 8 labelled dev rows, test.tsv: 4 labelled test rows\)"):
        load_table(DATASETS["sst2"], nlp_config(data=str(tmp_path)))
    (tmp_path / "train.csv").write_text("sentence,label\nfine,1\n")
    with pytest.raises(TapweightError, match=r"has two train files \(train.csv, train.tsv\): keep one"):
        load_table(DATASETS["sst2"], nlp_config(data=str(tmp_path)))


def test_hub_splits_without_train_rows_are_refused(tmp_path, nlp_config, monkeypatch):
    monkeypatch.setenv("TAPWEIGHT_DATA_DIR", str(tmp_path))  # no local copy
    rows = datasets.Dataset.from_dict({"sentence": SENTENCES[:4], "label": [0, 1, 0, 1]})
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(load.datasets, "load_dataset", lambda *a, **k: {"validation": rows, "test": rows})
    with pytest.raises(TapweightError, match=r"has no labelled train rows \(hub split 'validation': 4 labelled "
                                             r"dev rows, hub split 'test': 4 labelled test rows\)"):
        load_table(DATASETS["sst2"], nlp_config(data=""))


#: AG News's own layout, without a header row: class 1..4, title, description
AG_NEWS = [(1 + i % 4, f"title {i}", s) for i, s in enumerate(SENTENCES)]


def write_headerless(folder, rows=AG_NEWS):
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows[:9]))
    (folder / "test.tsv").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows[9:]))
    return folder


def test_files_without_a_header_row_by_position_or_by_name(tmp_path, nlp_config):
    data = str(write_headerless(tmp_path / "ag"))
    by_position = load_table(DATASETS["agnews"], nlp_config(
        "nlp.header=false", "nlp.label_column=0", "nlp.text_column=1", "nlp.pair_column=2",
        "nlp.label_base=1", task="agnews", data=data))
    assert list(by_position.parts) == ["train"] * 9 + ["test"] * 3  # no row taken for a header
    assert by_position.inputs[0] == ("title 0", SENTENCES[0])
    assert by_position.labels[:, 0].tolist() == [i % 4 for i in range(12)]
    by_name = load_table(DATASETS["agnews"], nlp_config(
        "nlp.header=false", "nlp.columns=[label,title,text]", "nlp.label_base=1", task="agnews", data=data))
    assert by_name.inputs == SENTENCES and by_name.labels.tolist() == by_position.labels.tolist()


def test_a_header_row_that_is_data_gets_the_fix(tmp_path, nlp_config):
    data = str(write_headerless(tmp_path / "ag"))
    with pytest.raises(TapweightError, match=r"no column 'text' \(columns: 1, title 0, a charming .*first row "
                                             r"looks like data.*--set nlp.header=false"):
        load_table(DATASETS["agnews"], nlp_config(task="agnews", data=data))
    with pytest.raises(TapweightError, match="numbered 0..2: e.g. --set nlp.text_column=1"):
        load_table(DATASETS["agnews"], nlp_config("nlp.header=false", task="agnews", data=data))
    with pytest.raises(TapweightError, match=r"label 4 is not a class id of 'agnews' \(0..3\); labels that "
                                             "count classes from 1: --set nlp.label_base=1"):
        load_table(DATASETS["agnews"], nlp_config("nlp.header=false", "nlp.columns=[label,title,text]",
                                                  task="agnews", data=data))
    with pytest.raises(TapweightError, match="has 3 columns, nlp.columns names 2 "):
        load_table(DATASETS["agnews"], nlp_config("nlp.header=false", "nlp.columns=[label,text]",
                                                  task="agnews", data=data))
    with pytest.raises(TapweightError, match="nlp.columns names the columns of files without a header"):
        nlp_config("nlp.columns=[label,text]", task="agnews")
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n')
    with pytest.raises(TapweightError, match="nlp.header=false is for csv and tsv files"):
        load_table(DATASETS["agnews"],
                   nlp_config("nlp.header=false", task="agnews", data=str(tmp_path / "train.jsonl")))


def test_offline_without_a_local_copy_says_what_to_pass(tmp_path, nlp_config, monkeypatch):
    monkeypatch.setenv("TAPWEIGHT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(TapweightError) as err:
        load_table(DATASETS["qnli"], nlp_config(task="qnli"))
    message = str(err.value)
    assert "\n" not in message and "--data DIR" in message and "question, sentence" in message

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(load.datasets, "load_dataset", unreachable)
    with pytest.raises(TapweightError, match="Couldn't reach.*--data DIR"):
        load_table(DATASETS["qnli"], nlp_config(task="qnli"))


def test_data_dir_copy_is_used(tmp_path, nlp_config, monkeypatch):
    folder = tmp_path / "nlp" / "sst2"
    folder.mkdir(parents=True)
    write_tsv(folder / "train.tsv", ("sentence", "label"), [(s, i % 2) for i, s in enumerate(SENTENCES)])
    write_tsv(folder / "test.tsv", ("sentence", "label"), [("fine", 1), ("awful", 0)])
    monkeypatch.setenv("TAPWEIGHT_DATA_DIR", str(tmp_path))
    table = load_table(DATASETS["sst2"], nlp_config())
    assert len(table.inputs) == 14 and table.source == str(folder)


def test_build_data_subsamples_and_builds_the_tapt_corpus(nlp_config, sst2):
    cfg = nlp_config("nlp.max_train=200", "nlp.max_val=50")
    split = glue_split(sst2, 0)
    data = build_data(cfg, sst2, split, SST2_TASK)
    assert (len(data.train), len(data.val), len(data.test)) == (200, 50, 872)
    assert data.info["train rows"] == f"200 of {len(split.train)}, subsampled by nlp.max_train"
    assert data.info["test rows"] == 872
    assert "TAPT" in data.info["corpus"] and len(data.corpus) == 200
    assert sorted(data.corpus.texts) == sorted(x for x, _ in (data.train[i] for i in range(200)))
    inputs, labels = data.task_collate([data.train[i] for i in range(4)])
    assert labels.dtype == torch.long and labels.shape == (4,)
    assert inputs["input_ids"].shape[1] <= cfg.options.max_length
    batch = data.corpus_collate([data.corpus[i] for i in range(3)])
    assert set(batch) == {"input_ids", "attention_mask", "special_tokens_mask"}


def test_corpus_file_replaces_the_task_text(tmp_path, nlp_config, sst2):
    (tmp_path / "corpus.txt").write_text("first line of text\n\n  second line  \n")
    split = Split(np.arange(10), np.arange(10, 12), np.arange(12, 14))
    data = build_data(nlp_config(corpus=str(tmp_path / "corpus.txt")), sst2, split, SST2_TASK)
    assert data.corpus.texts == ["first line of text", "second line"]
    with pytest.raises(TapweightError, match="is not a file"):
        build_data(nlp_config(corpus=str(tmp_path / "missing.txt")), sst2, split, SST2_TASK)
