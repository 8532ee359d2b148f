"""``tapweight run nlp custom``: any labelled text file, or a folder of train/dev/test files.

The text is in ``nlp.text_column`` (default ``text``; a second one, ``nlp.pair_column``, makes
sentence pairs) and the label in ``nlp.label_column`` (default ``label``). Labels that are
names (``pos``, ``neutral``) or whole numbers that repeat make a classification task whose
classes are the training file's labels in sorted order (numbers in numeric order), unless
``nlp.classes`` states them; real numbers make a regression task (``nlp.task_type`` decides
when the data cannot). The classes are kept in the run's config, so predictions and exports
name them. The split is ``files``: the folder's own train/dev/test files, what is missing drawn
from train (`tapweight_nlp.data.files_split`).
"""

from __future__ import annotations

from pathlib import Path

from tapweight import TapweightError, class_names, custom_task, data_name, is_classification
from tapweight_nlp.load import TextTable, _read_local, _shown, load_table
from tapweight_nlp.tasks import CUSTOM, DEFAULT_STEPS, dataset_of


def _data(cfg) -> Path:
    if not cfg.data:
        raise TapweightError("nlp/custom trains on your labelled file: pass --data FILE (csv, tsv, json(l), "
                             "parquet) or a folder of train/dev/test files, and name its columns with "
                             "--set nlp.text_column=NAME --set nlp.label_column=NAME")
    path = Path(cfg.data).expanduser()
    if not path.exists():
        raise TapweightError(f"--data '{cfg.data}' does not exist")
    return path


def train_labels(cfg) -> list:
    """The label cells of the training file, empty ones dropped."""
    opts = cfg.options
    rows, origin = _read_local(_data(cfg), opts)["train"]
    column = opts.label_column or CUSTOM.label_column
    if column not in rows.column_names:
        raise TapweightError(f"{origin} has no label column '{column}' (columns: {_shown(rows.column_names)}); "
                             "name it with --set nlp.label_column=NAME")
    return [v for v in rows[column] if v is not None and str(v).strip() != "" and v == v]


def fit(cfg):
    """``TaskSpec.fit`` of ``nlp/custom``: the task type and classes from the training labels
    unless the options state them."""
    opts = cfg.options
    classes, task_type = list(opts.classes), opts.task_type
    if classes and task_type == "regression":
        raise TapweightError("nlp.classes names classes, but nlp.task_type=regression: drop one")
    if task_type == "auto" and classes:
        task_type = "classification"
    if task_type == "auto" or (task_type == "classification" and not classes):
        values = train_labels(cfg)
        if not values:
            raise TapweightError(f"the training file of '{cfg.data}' has no labels in its label column")
        task_type = "classification" if is_classification(values, task_type) else "regression"
        if task_type == "classification" and not classes:
            classes = class_names(values)
    title = opts.name or data_name(cfg.data or "custom")
    classification = task_type == "classification"
    if classification and len(classes) < 2:
        raise TapweightError(f"'{cfg.data}' has a single class ({', '.join(classes)}) in its training labels: "
                             "a classifier needs two or more (or --set nlp.task_type=regression)")
    kind = f"{len(classes)}-class classification ({', '.join(classes)})" if classification else "regression"
    return custom_task("nlp", loss="ce" if classification else "mse", metric=opts.metric,
                       metric_option="nlp.metric", title=title, split="files",
                       description=f"{title}: {kind}", n_classes=len(classes), classes=classes,
                       settled={"nlp.task_type": task_type, "nlp.classes": classes, "nlp.name": title},
                       defaults={"steps": DEFAULT_STEPS})


def load(cfg) -> TextTable:
    """``DatasetSpec.load`` of ``nlp.custom``: the file(s) of ``--data``, read as laid out."""
    _data(cfg)
    return load_table(dataset_of(cfg), cfg)
