"""Feature rows: the train split's standardization, batches of rows, and new rows to score.

``tapweight predict`` reads a CSV of new rows (a header row, then one row per example with
the task's features in the data set's order; a column named like the task's label is
ignored) and prepares it with the standardization the run fitted on its train split, saved
in the seed's ``predictor/features.json``. A row with an empty or non-numeric cell is not
scored; its reason names the column. A blank line is an "empty row", not skipped, so that
the output's row numbers stay the file's lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tapweight import Inputs, Predictor, TapweightError
from torch.utils.data import TensorDataset

from tapweight_tabular.backbone import MLPBackbone

FEATURES_FILE = "features.json"


class Standardizer:
    """``(x - mean) / std`` per column, with the statistics of the train split (`fit`).

    Constant columns (std 0, e.g. the border pixels of ``digits``) are only centred;
    NaN entries are ignored by the fit and stay NaN.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = mean, std  # [F] each

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        std = np.nanstd(values, axis=0)  # NaN (a missing value) is left out
        return cls(np.nanmean(values, axis=0), np.where(std > 1e-8, std, 1.0))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)


def collate_pairs(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Task items ``(x, y)`` -> ``([B, F], labels)``; labels ``[B, T]`` float or ``[B]`` long."""
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def read_rows(path: str, n_features: int, label_names: Sequence[str]) -> Inputs:
    """The feature rows of a CSV (``.tsv``: tab-separated) with a header row, one per data line
    (a blank line is an "empty row")."""
    try:
        frame = pd.read_csv(path, sep="\t" if path.endswith(".tsv") else ",", keep_default_na=False,
                            na_values=[""], skip_blank_lines=False)  # only an empty cell is empty
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        reason = " ".join(str(err).split())[:100] or type(err).__name__
        raise TapweightError(f"cannot read '{path}' as a CSV of feature rows ({reason})") from None
    frame = frame.drop(columns=[c for c in frame.columns if c in label_names])
    if frame.shape[1] != n_features:
        raise TapweightError(f"'{path}' has {frame.shape[1]} feature columns; this run's model "
                             f"reads {n_features} (a header row, then the features in the data "
                             "set's order)")
    numbers = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)  # [N, F]
    errors = []
    for i, row in enumerate(numbers):
        bad = np.flatnonzero(~np.isfinite(row))
        if frame.iloc[i].isna().all():  # a blank line, kept: row numbers stay the lines
            errors.append("empty row")
        elif len(bad):
            column, cell = frame.columns[bad[0]], frame.iloc[i, bad[0]]
            errors.append(f"column '{column}' is empty" if pd.isna(cell) else
                          f"column '{column}' holds {cell!r}, not a finite number")
        else:
            errors.append("")
    return Inputs(list(numbers), errors, source=str(path))


def row_predictor(cfg, scale_x: Standardizer, label_names: Sequence[str]) -> Predictor:
    """New rows prepared as the run's: standardized with its train statistics."""
    n_features = len(scale_x.mean)
    o = cfg.options

    def dataset(rows: list) -> TensorDataset:
        x = torch.from_numpy(scale_x(np.stack(rows)))  # [n, F]
        return TensorDataset(x, torch.full((len(rows), len(label_names)), float("nan")))

    def save(folder: Path) -> None:
        (folder / FEATURES_FILE).write_text(json.dumps({
            "label_names": list(label_names), "dtype": str(scale_x.mean.dtype),
            "mean": scale_x.mean.tolist(), "std": scale_x.std.tolist()}, indent=2) + "\n")

    def backbone() -> MLPBackbone:
        return MLPBackbone(n_features, o.hidden, o.layers, o.out_dim, o.dropout)

    return Predictor(read=lambda path: read_rows(path, n_features, label_names), dataset=dataset,
                     collate=collate_pairs, backbone=backbone, save=save)


def load_predictor(cfg, folder: Path) -> Predictor:
    """``Domain.load_predictor``: the predictor a run saved in ``folder``."""
    saved = json.loads((folder / FEATURES_FILE).read_text())
    dtype = np.dtype(saved["dtype"])  # float32 statistics come back bit for bit
    mean, std = (np.array(saved[key], dtype=dtype) for key in ("mean", "std"))
    scale_x = Standardizer(mean, std)
    return row_predictor(cfg, scale_x, saved["label_names"])
