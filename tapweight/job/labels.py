"""Labels that cannot train a model or score it are refused before any work is done.

A data set whose labels are all missing, hold one class only, or hold values the task's
loss cannot read (a 2 for a binary task) would run to the end and report a meaningless
number (or NaN). `check_table` looks at the loaded table, `check_split` at each
seed's split: the train split must hold something to learn, the val and test splits
something to score.
"""

from __future__ import annotations

import numpy as np

from tapweight.errors import TapweightError
from tapweight.plugin.specs import Split, Table, TaskSpec


def _where(table: Table) -> str:
    return table.source or "the data"


def check_table(table: Table, task: TaskSpec) -> None:
    """The loaded labels fit the task's loss and hold more than one class (or value)."""
    labels = np.asarray(table.labels, dtype=float)  # [N, T]
    present = ~np.isnan(labels)
    where = _where(table)
    if not present.any():
        raise TapweightError(f"{where} has no labels (every label cell is empty or NaN): "
                             f"{task.key} needs labelled rows")
    values = labels[present]
    if task.loss == "bce" and not np.isin(values, (0.0, 1.0)).all():
        bad = values[~np.isin(values, (0.0, 1.0))][0]
        raise TapweightError(f"{where}: label {bad:g} in a binary task; labels of {task.key} "
                             "must be 0 or 1 (empty for missing)")
    if task.loss == "ce":
        bad = values[(values != np.round(values)) | (values < 0) | (values >= task.n_classes)]
        if len(bad):
            raise TapweightError(f"{where}: label {bad[0]:g} is not a class id of {task.key} "
                                 f"(0..{task.n_classes - 1})")
    if not any(_learnable(labels[:, t]) for t in range(labels.shape[1])):
        raise TapweightError(f"{where}: every label column holds a single "
                             f"{'value' if task.loss == 'mse' else 'class'}; {task.key} cannot "
                             "learn or be scored on it: check the label column")


def check_split(table: Table, split: Split, task: TaskSpec, seed: int) -> None:
    """Train can be learned from; val and test can be scored by the task's metric."""
    labels = np.asarray(table.labels, dtype=float)
    for name, rows in (("train", split.train), ("val", split.val), ("test", split.test)):
        part = labels[rows]
        if not len(rows) or np.isnan(part).all():
            raise TapweightError(f"the {name} split of seed {seed} has no labelled rows: the data "
                                 f"set is too small for {task.key}'s split; add rows")
        scorable = name == "train" or task.metric in ("roc_auc", "pr_auc", "pearson", "spearman", "r2")
        if scorable and not any(_learnable(part[:, t]) for t in range(part.shape[1])):
            need = "one value" if task.loss == "mse" else "one class"
            raise TapweightError(f"the {name} split of seed {seed} holds {need} only in every label "
                                 f"column, so {task.metric if name != 'train' else 'training'} is "
                                 "undefined: add rows of the other classes or use another --seeds")


def _learnable(column: np.ndarray) -> bool:
    """At least two distinct labels in ``column`` (NaN ignored)."""
    return len(np.unique(column[~np.isnan(column)])) >= 2
