"""``tapweight run tabular custom --data rows.csv``: any CSV of numeric features and a label.

The label is in ``tabular.label_column`` (default ``label``); every other column is a
feature. The task is fitted to the file through the core's `tapweight.custom_task`,
as the built-in domains' ``custom`` tasks are: class names or repeated whole numbers make a
classification task (classes in sorted order, or ``tabular.classes``), real numbers a
regression; ``tabular.task_type`` and ``tabular.metric`` decide instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tapweight import Table, TapweightError, class_names, custom_task, data_name, is_classification


def _frame(cfg) -> pd.DataFrame:
    if not cfg.data or not Path(cfg.data).expanduser().is_file():
        raise TapweightError(
            "tabular/custom trains on your CSV: pass --data FILE (a header row, numeric "
            "feature columns and the label column, --set tabular.label_column=NAME)"
        )
    try:
        frame = pd.read_csv(Path(cfg.data).expanduser())
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise TapweightError(f"cannot read {cfg.data} as CSV: {err}") from None
    column = cfg.options.label_column
    if column not in frame.columns:
        raise TapweightError(
            f"{cfg.data} has no label column '{column}' (columns: "
            f"{', '.join(map(str, frame.columns[:12]))}); name it with "
            "--set tabular.label_column=NAME"
        )
    return frame


def fit(cfg):
    """``TaskSpec.fit`` of ``tabular/custom``: type and classes from the labels unless stated."""
    opts = cfg.options
    classes, task_type = list(opts.classes), opts.task_type
    if task_type == "auto" and classes:
        task_type = "classification"
    if task_type == "auto" or (task_type == "classification" and not classes):
        values = _frame(cfg)[opts.label_column].dropna().tolist()
        task_type = "classification" if is_classification(values, task_type) else "regression"
        classes = classes or (class_names(values) if task_type == "classification" else [])
    title = opts.name or data_name(cfg.data or "custom")
    classification = task_type == "classification"
    return custom_task(
        "tabular",
        loss="ce" if classification else "mse",
        metric=opts.metric,
        metric_option="tabular.metric",
        title=title,
        split="stratified",
        description=f"{title}: " + (f"{len(classes)} classes" if classification else "regression"),
        n_classes=len(classes),
        classes=classes,
        settled={"tabular.task_type": task_type, "tabular.classes": classes, "tabular.name": title},
    )


def load(cfg) -> Table:
    """``DatasetSpec.load`` of ``tabular.custom``: the features and the label (ids or values)."""
    opts = cfg.options
    frame = _frame(cfg)
    features = frame.drop(columns=[opts.label_column])
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise TapweightError(
            f"{cfg.data}: column '{text[0]}' is not numeric; tabular/custom reads every "
            "column but the label as a feature: drop it from the file"
        )
    labels = frame[opts.label_column]
    if opts.classes:
        index = {name: i for i, name in enumerate(opts.classes)}
        names = labels.map(lambda v: v if pd.isna(v) else class_names([v])[0])
        unknown = sorted({n for n in names.dropna() if n not in index})
        if unknown:
            raise TapweightError(
                f"{cfg.data}: label '{unknown[0]}' is not one of the classes "
                f"{', '.join(opts.classes)}"
            )
        values = names.map(index.get).astype(float)
    else:
        values = pd.to_numeric(labels, errors="coerce")
    return Table(
        list(features.to_numpy(np.float32)),
        values.to_numpy(np.float64).reshape(-1, 1),
        (opts.label_column,),
        source=str(cfg.data),
    )
