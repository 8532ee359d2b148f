"""A task for any labelled file: its loss and metric from the labels or the user's options.

A domain offers one as its ``custom`` task (``tapweight run mol custom --data assay.csv``):
a `TaskSpec` whose ``fit(cfg)`` reads the file's label columns and calls
`custom_task`. The task type is ``classification`` or ``regression``; ``auto`` takes
classification when every label is a class name or a whole number that repeats, regression
otherwise (a column of reals). The metric is the option's, or the type's default:

========  ========================  ===========================================
loss      default (and reported)    accepted as ``metric``
========  ========================  ===========================================
``bce``   roc_auc (pr_auc)          roc_auc, pr_auc, accuracy, f1, mcc
``ce``    accuracy (f1, mcc)        accuracy, f1, mcc
``mse``   rmse (mae, r2)            rmse, mae, r2, pearson, spearman
========  ========================  ===========================================

Importing this module is cheap (no numpy until a function needs it): plugins register with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tapweight.errors import TapweightError
from tapweight.plugin.specs import TaskSpec

TASK_TYPES = ("auto", "classification", "regression")

#: loss -> (default metric, metrics reported beside it, every metric accepted)
METRICS = {
    "bce": ("roc_auc", ("pr_auc",), ("roc_auc", "pr_auc", "accuracy", "f1", "mcc")),
    "ce": ("accuracy", ("f1", "mcc"), ("accuracy", "f1", "mcc")),
    "mse": ("rmse", ("mae", "r2"), ("rmse", "mae", "r2", "pearson", "spearman")),
}


def check_task_type(task_type: str, option: str) -> None:
    """One line for a task type that is not one of `TASK_TYPES`."""
    if task_type not in TASK_TYPES:
        raise TapweightError(f"{option}={task_type!r}: use one of {', '.join(TASK_TYPES)}")


def is_classification(values: Sequence[Any], task_type: str) -> bool:
    """Whether labels ``values`` (missing ones already dropped) make a classification task:
    ``task_type`` when stated, else (``auto``) text labels, or whole numbers of which none is
    unique (a regression target of whole numbers, such as a count, has singletons)."""
    if task_type != "auto":
        return task_type == "classification"
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    if np.isnan(numbers).any():
        return True  # class names
    if not np.all(numbers == np.round(numbers)):
        return False
    _, counts = np.unique(numbers, return_counts=True)
    return bool(len(counts) >= 2 and counts.min() >= 2)


def class_names(values: Sequence[Any]) -> list[str]:
    """The distinct labels of ``values`` as class names in id order: sorted, numbers in numeric
    order and written without ``.0`` (labels 0, 1, 2 keep their ids)."""
    try:
        numbers = sorted({float(v) for v in values})
    except ValueError:
        return sorted({str(v).strip() for v in values})
    return [str(int(n)) if n == int(n) else str(n) for n in numbers]


def pick_metrics(loss: str, metric: str, option: str) -> tuple[str, tuple[str, ...]]:
    """The model-selection metric and the metrics reported beside it, for ``loss``."""
    default, extra, accepted = METRICS[loss]
    if not metric:
        return default, extra
    if metric not in accepted:
        kind = {"bce": "a binary", "ce": "a multi-class", "mse": "a regression"}[loss]
        raise TapweightError(f"{option}={metric!r} does not score {kind} task; use one of "
                             f"{', '.join(accepted)}")
    return metric, tuple(m for m in (default, *extra) if m != metric)


def data_name(path: str) -> str:
    """A run name from a data path: the file's name without its suffixes, or the folder's."""
    p = Path(path).expanduser()
    name = p.name
    if p.is_file() or not p.exists():
        name = name.split(".")[0] or name
    return name or "custom"


def custom_task(domain: str, *, loss: str, metric: str, metric_option: str, title: str, split: str,
                description: str, settled: Mapping[str, Any], n_classes: int = 0,
                classes: Sequence[str] = (), overrides: Mapping[str, Any] | None = None,
                defaults: Mapping[str, Any] | None = None) -> TaskSpec:
    """The fitted ``custom`` task of ``domain``: ``settled`` holds the option values the data
    decided (dotted keys, e.g. ``{"nlp.task_type": "classification"}``), kept in the config."""
    chosen, extra = pick_metrics(loss, metric, metric_option)
    return TaskSpec(domain=domain, name="custom", dataset=f"{domain}.custom", split=split, loss=loss,
                    metric=chosen, extra_metrics=extra, n_classes=n_classes,
                    defaults={**(defaults or {}), **settled}, description=description,
                    overrides=dict(overrides or {}), classes=tuple(classes), title=title)
