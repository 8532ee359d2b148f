"""Regression targets on a unit scale: standardised with the training split's statistics.

MSE on raw physical units (FreeSolv's kcal/mol spread over −25 … 3) makes the task
gradients, and with them the hypergradient, as large as the targets' spread: the
α learning rate (tuned for classification losses) then throws λ onto one objective in a
step. chemprop-style tools therefore train on ``(y − mean) / std`` with the mean and
standard deviation of the TRAIN rows only (nothing of val or test leaks in) and report
predictions and metrics back in the original units. The runner does this for every
``mse`` task of every domain: levels II and III and the final fine-tune see standardised
targets, ``finetune.evaluate`` maps predictions and labels back before scoring, and the
scaler is saved as ``seed<k>/target_scaler.json`` (`SCALER_FILE`) so a later
prediction can undo it:

    {"columns": ["expt"], "mean": [-3.80], "std": [3.85]}

original = standardised × std + mean, per label column. The conventions are
scikit-learn's ``StandardScaler`` (population std, NaN ignored by the fit and kept by
the transform, a constant column only centred); a column without any training label
keeps mean 0 and std 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tapweight.files import atomic_write
from tapweight.plugin.specs import Split, Table

SCALER_FILE = "target_scaler.json"


@dataclass(frozen=True)
class TargetScaler:
    """Per label column: standardised = (y − mean) / std."""

    columns: tuple[str, ...]
    mean: np.ndarray  # [T]
    std: np.ndarray  # [T], > 0

    @classmethod
    def fit(cls, labels: np.ndarray, columns: tuple[str, ...]) -> TargetScaler:
        """Statistics of ``labels`` ``[N, T]`` (NaN = missing), column by column."""
        labels = np.asarray(labels, dtype=np.float64)
        present = ~np.isnan(labels)
        count = present.sum(0)
        mean = np.where(present, labels, 0.0).sum(0) / np.maximum(count, 1)
        var = np.where(present, (labels - mean) ** 2, 0.0).sum(0) / np.maximum(count, 1)
        std = np.sqrt(var)
        return cls(tuple(columns), mean, np.where(std > 0, std, 1.0))

    def transform(self, labels: np.ndarray) -> np.ndarray:
        """Original units → standardised (float32, NaN stays NaN)."""
        return ((labels - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Standardised → original units; ``values`` is ``[N, T]`` (or ``[N]`` for one column)."""
        shape = np.shape(values)
        restored = np.reshape(values, (shape[0], -1)) * self.std + self.mean
        return restored.reshape(shape)

    def save(self, path: Path) -> None:
        text = json.dumps({"columns": list(self.columns), "mean": self.mean.tolist(),
                           "std": self.std.tolist()}, indent=2)
        atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))

    @classmethod
    def load(cls, path: Path) -> TargetScaler:
        saved = json.loads(Path(path).read_text())
        return cls(tuple(saved["columns"]), np.array(saved["mean"], dtype=np.float64),
                   np.array(saved["std"], dtype=np.float64))


def standardize_targets(table: Table, split: Split) -> tuple[Table, TargetScaler]:
    """``table`` with its labels standardised by the statistics of the ``split.train`` rows."""
    scaler = TargetScaler.fit(table.labels[split.train], table.label_names)
    return replace(table, labels=scaler.transform(table.labels)), scaler
