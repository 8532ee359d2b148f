"""Tabular data: scikit-learn's bundled data sets, a stratified split, standardization.

Features are standardized with the mean and standard deviation of the TRAIN split only,
so nothing about the validation or test rows leaks into training (regression targets are
standardized by tapweight's runner, which reports metrics in their original units). The
pretraining corpus is the task's own training rows (TAPT, Gururangan et al., ACL 2020)
unless ``--corpus`` names a CSV or ``.npy`` file of rows; ``tapweight pretrain tabular
--corpus FILE`` pretrains on such a file alone (`build_corpus`), standardized with its
own statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split
from tapweight import DomainData, Split, Table, TapweightError, TaskSpec
from torch.utils.data import TensorDataset

from tapweight_tabular.catalog import SKLEARN_DATASETS
from tapweight_tabular.features import Standardizer, collate_pairs, row_predictor

MAX_CLASSES = 20  # a label column with at most this many values is stratified by class
N_BINS = 10  # otherwise by deciles of its value


def load_sklearn(name: str, cfg) -> Table:
    """Load one of `SKLEARN_DATASETS` (bundled with scikit-learn: no download)."""
    if cfg.data:
        raise TapweightError(
            f"dataset '{name}' is scikit-learn's bundled copy and reads no file: drop --data")
    loader, label, _ = SKLEARN_DATASETS[name]
    bunch = getattr(skdatasets, loader)()
    features = np.asarray(bunch.data, dtype=np.float32)  # [N, F]
    labels = np.asarray(bunch.target, dtype=np.float64).reshape(-1, 1)  # [N, 1]
    return Table(list(features), labels, (label,), source=f"sklearn.datasets.{loader}")


def strata(labels: np.ndarray) -> np.ndarray:
    """Stratum of each row: its class, or the decile of its value for a continuous label."""
    y = labels[:, 0]
    values = np.unique(y[~np.isnan(y)])
    if len(values) <= MAX_CLASSES:
        return np.where(np.isnan(y), -1, y).astype(np.int64)
    edges = np.nanquantile(y, np.linspace(0, 1, N_BINS + 1)[1:-1])
    return np.where(np.isnan(y), -1, np.digitize(y, edges)).astype(np.int64)


def stratified_split(table: Table, seed: int) -> Split:
    """Random 8:1:1 split that keeps each stratum's share (the first label column's)."""
    rows = np.arange(len(table.inputs))
    groups = strata(table.labels)
    try:
        train, rest = train_test_split(rows, test_size=0.2, stratify=groups, random_state=seed)
        val, test = train_test_split(rest, test_size=0.5, stratify=groups[rest],
                                     random_state=seed)
    except ValueError as err:
        raise TapweightError(f"cannot split the data stratified ({err}); use --set split=random")\
            from None
    return Split(np.sort(train), np.sort(val), np.sort(test))


def feature_matrix(inputs, rows: np.ndarray | None = None) -> np.ndarray:
    """Stack a table's feature vectors (all, or ``rows``) into ``[N, F]`` float32."""
    picked = inputs if rows is None else [inputs[i] for i in rows]
    return np.stack([np.asarray(x, dtype=np.float32) for x in picked])


def load_corpus(path: str, n_features: int | None = None) -> np.ndarray:
    """Unlabelled rows for level I from a CSV (header row, numeric columns) or ``.npy``;
    ``n_features``, when given, is the width they must have (the task's)."""
    file = Path(path)
    if file.is_dir():
        raise TapweightError(f"corpus '{path}' is a folder: give one file (a CSV of numbers with a "
                             "header row, or a .npy array)")
    if not file.is_file():
        raise TapweightError(f"corpus file '{path}' does not exist")
    try:
        if file.suffix == ".npy":
            rows = np.load(file)  # allow_pickle stays False: a data file runs no code
        else:
            rows = pd.read_csv(file).select_dtypes("number").to_numpy()
    except (ValueError, OSError, pd.errors.ParserError) as err:  # empty, binary, not an array
        reason = " ".join(str(err).split())[:100] or type(err).__name__
        raise TapweightError(f"corpus '{path}' is neither a CSV of numbers with a header row nor "
                             f"a .npy array ({reason})") from None
    if rows.ndim != 2 or (n_features is not None and rows.shape[1] != n_features):
        width = n_features or "some"
        raise TapweightError(f"corpus '{path}' has shape {rows.shape}; it needs {width} numeric "
                             "feature columns, like the task's data")
    if not np.isfinite(rows).all():
        raise TapweightError(f"corpus '{path}' has missing or infinite values: fill or drop them")
    return rows.astype(np.float32)


def collate_rows(items: list) -> torch.Tensor:
    """Corpus items ``(x,)`` -> a batch of rows ``[B, F]``."""
    return torch.stack([x for (x,) in items])


def build_corpus(cfg, path: str) -> DomainData:
    """``Domain.build_corpus``: the rows of a corpus file alone, standardized with their own
    statistics; ``info["features"]`` sizes the backbone, which a task of the same width can
    then start from (``tapweight run tabular TASK --init <run>/backbone.safetensors``)."""
    rows = load_corpus(path)
    info = {"features": rows.shape[1], "corpus": f"{len(rows)} rows from {path}",
            "standardized_on": "the corpus's own rows"}
    return DomainData(corpus=TensorDataset(torch.from_numpy(Standardizer.fit(rows)(rows))),
                      corpus_collate=collate_rows, info=info)


def build_data(cfg, table: Table, split: Split, task: TaskSpec) -> DomainData:
    """Standardize with train statistics, build the three task sets and the corpus.

    Labels stay ``[N, T]`` float with NaN = missing (a ``ce`` task's column holds class ids,
    which the core reads as such; a regression task's arrive standardized by the runner).
    ``info["features"]`` is the input width the backbone sizes itself by.
    """
    features = feature_matrix(table.inputs)  # [N, F]
    n_features = features.shape[1]
    scale_x = Standardizer.fit(features[split.train])
    info = {"features": n_features, "standardized_on": f"{len(split.train)} train rows"}
    labels = table.labels.astype(np.float32)  # [N, T]

    def task_set(rows: np.ndarray) -> TensorDataset:
        x = torch.from_numpy(scale_x(features[rows]))  # [n, F]
        y = torch.from_numpy(labels[rows])  # [n, T]
        return TensorDataset(x, y)

    if cfg.corpus:
        corpus_rows = scale_x(load_corpus(cfg.corpus, n_features))
        info["corpus"] = f"{len(corpus_rows)} rows from {cfg.corpus}"
    else:
        corpus_rows = scale_x(features[split.train])
        info["corpus"] = f"{len(corpus_rows)} training rows (TAPT)"
    return DomainData(
        corpus=TensorDataset(torch.from_numpy(corpus_rows)), corpus_collate=collate_rows,
        train=task_set(split.train), val=task_set(split.val), test=task_set(split.test),
        task_collate=collate_pairs, info=info,
        predictor=row_predictor(cfg, scale_x, table.label_names))
