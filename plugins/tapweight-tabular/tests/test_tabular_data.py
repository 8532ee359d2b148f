"""Loading scikit-learn's data sets, the stratified split, standardization on train rows."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import datasets as skdatasets
from tapweight import Table, TapweightError

from tapweight_tabular.data import build_data, load_sklearn, stratified_split
from tapweight_tabular.plugin import TASKS

TASK = {task.name: task for task in TASKS}

SHAPES = {"breast-cancer": (569, 30), "wine": (178, 13), "digits": (1797, 64),
          "diabetes": (442, 10)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_load_gives_the_bundled_table(make_cfg, name):
    table = load_sklearn(name, make_cfg())
    rows, features = SHAPES[name]
    assert len(table.inputs) == rows and table.inputs[0].shape == (features,)
    assert table.labels.shape == (rows, 1) and not np.isnan(table.labels).any()


def test_load_refuses_a_data_file(make_cfg):
    cfg = make_cfg()
    cfg.data = "mine.csv"
    with pytest.raises(TapweightError, match="drop --data"):
        load_sklearn("wine", cfg)


def _table(labels) -> Table:
    labels = np.asarray(labels, dtype=float).reshape(-1, 1)
    return Table([np.zeros(2, np.float32)] * len(labels), labels, ("y",))


def test_split_is_8_1_1_disjoint_and_covers_every_row():
    split = stratified_split(_table(np.arange(1000) % 2), seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (800, 100, 100)
    together = np.concatenate([split.train, split.val, split.test])
    assert np.array_equal(np.sort(together), np.arange(1000))


def test_split_keeps_class_shares_in_every_part():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    split = stratified_split(_table(labels), seed=3)
    for part, size in ((split.train, 800), (split.val, 100), (split.test, 100)):
        shares = np.bincount(labels[part], minlength=3) / size
        assert np.allclose(shares, [0.5, 0.3, 0.2], atol=0.011)  # within one row of exact


def test_split_stratifies_a_continuous_label_by_deciles():
    values = np.random.default_rng(0).normal(size=1000)
    split = stratified_split(_table(values), seed=0)
    deciles = np.quantile(values, np.linspace(0, 1, 11)[1:-1])
    for part in (split.val, split.test):
        assert np.all(np.bincount(np.digitize(values[part], deciles), minlength=10) == 10)


def test_split_is_deterministic_in_the_seed():
    table = _table(np.arange(200) % 3)
    a, b, c = (stratified_split(table, s) for s in (7, 7, 8))
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "val", "test"))
    assert not np.array_equal(a.test, c.test)


def test_features_are_standardized_with_train_statistics_only(make_cfg):
    cfg = make_cfg("wine")
    table = load_sklearn("wine", cfg)
    split = stratified_split(table, 0)
    data = build_data(cfg, table, split, TASK["wine"])
    x = skdatasets.load_wine().data
    mean, std = x[split.train].mean(0), x[split.train].std(0)  # independent of the plugin
    for part, rows in ((data.train, split.train), (data.test, split.test)):
        assert np.allclose(part.tensors[0].numpy(), (x[rows] - mean) / std, atol=1e-4)
    assert np.allclose(data.train.tensors[0].mean(0).numpy(), 0, atol=1e-5)
    # the full data's statistics would give different test features: no leak
    full = (x[split.test] - x.mean(0)) / x.std(0)
    assert not np.allclose(data.test.tensors[0].numpy(), full, atol=1e-3)
    assert data.info["features"] == 13


def test_constant_columns_are_centred_not_divided_by_zero(make_cfg):
    cfg = make_cfg("digits")
    table = load_sklearn("digits", cfg)
    data = build_data(cfg, table, stratified_split(table, 0), TASK["wine"])
    assert torch.isfinite(data.train.tensors[0]).all()


def test_labels_are_shaped_for_the_loss(make_cfg):
    cfg = make_cfg("wine")
    table = load_sklearn("wine", cfg)
    split = stratified_split(table, 0)
    data = build_data(cfg, table, split, TASK["wine"])
    x, y = data.task_collate([data.train[i] for i in range(4)])
    assert x.shape == (4, 13) and y.shape == (4, 1)  # float class ids: the core reads them for ce
    assert set(y[:, 0].tolist()) <= {0.0, 1.0, 2.0}
    y = build_data(make_cfg(), table, split, TASK["breast-cancer"]).train.tensors[1]
    assert y.dtype == torch.float32 and y.shape == (len(split.train), 1)


def test_regression_targets_reach_the_task_sets_as_the_runner_gives_them(make_cfg):
    cfg = make_cfg("diabetes")
    table = load_sklearn("diabetes", cfg)
    split = stratified_split(table, 0)
    data = build_data(cfg, table, split, TASK["diabetes"])  # the runner standardizes them first
    assert np.allclose(data.val.tensors[1][:, 0].numpy(), table.labels[split.val, 0])


def test_default_corpus_is_the_standardized_training_rows(make_cfg):
    cfg = make_cfg()
    table = load_sklearn("breast-cancer", cfg)
    data = build_data(cfg, table, stratified_split(table, 0), TASK["breast-cancer"])
    assert torch.equal(data.corpus.tensors[0], data.train.tensors[0])
    batch = data.corpus_collate([data.corpus[i] for i in range(5)])
    assert batch.shape == (5, 30)


def test_corpus_file_replaces_the_training_rows(make_cfg, tmp_path):
    cfg = make_cfg("wine")
    table = load_sklearn("wine", cfg)
    split = stratified_split(table, 0)
    rows = np.random.default_rng(0).normal(size=(50, 13))
    pd.DataFrame(rows, columns=[f"f{i}" for i in range(13)]).to_csv(tmp_path / "c.csv", index=False)
    cfg.corpus = str(tmp_path / "c.csv")
    data = build_data(cfg, table, split, TASK["wine"])
    assert len(data.corpus) == 50
    x = skdatasets.load_wine().data[split.train]
    assert np.allclose(data.corpus.tensors[0].numpy(), (rows - x.mean(0)) / x.std(0), atol=1e-4)


@pytest.mark.parametrize("content,message", [
    ("a,b\n1,2\n", "needs 13 numeric feature columns"),
    (None, "does not exist"),
])
def test_bad_corpus_files_are_one_line_errors(make_cfg, tmp_path, content, message):
    cfg = make_cfg("wine")
    path = tmp_path / "c.csv"
    if content is not None:
        path.write_text(content)
    cfg.corpus = str(path)
    table = load_sklearn("wine", cfg)
    with pytest.raises(TapweightError, match=message):
        build_data(cfg, table, stratified_split(table, 0), TASK["wine"])


def test_a_blank_line_of_rows_to_score_is_an_empty_row_so_row_numbers_stay_the_files(tmp_path):
    from tapweight_tabular.features import read_rows

    (tmp_path / "new.csv").write_text("a,b,label\n1,2,0\n\n3,x,1\n4,5,1\n")
    read = read_rows(str(tmp_path / "new.csv"), 2, ["label"])
    assert read.errors == ["", "empty row", "column 'b' holds 'x', not a finite number", ""]
    np.testing.assert_array_equal(read.inputs[3], [4, 5])  # the file's 4th data line is row 4
