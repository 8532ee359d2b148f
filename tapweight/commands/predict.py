"""``tapweight predict RUN --data FILE``: score new inputs with a run's final model.

The inputs are read and prepared by the run's domain (``Predictor``, `tapweight.job.saved`)
exactly as its training data was: SMILES drawn at the run's image size, texts through its
tokenizer, features standardised with its train split's statistics. A row the domain cannot
read (an invalid SMILES, an empty text, a missing value) gets an empty prediction and its
reason in the ``error`` column; the other rows are scored.

With several seeds the prediction is the mean over every seed's final model (an ensemble,
as chemprop averages its models): the mean probability for classification (``ce``: the
class of highest mean probability), the mean value for regression. ``seed=k`` uses seed k
alone. Columns: ``row`` (data lines of the file, from 1, after any header: a blank line is a
row too, not scored, so that row k is the file's k-th data line), ``input`` (when inputs are text),
``pred_<label>`` (``bce``: probability of 1; ``mse``: the value in the targets' units;
``ce``: the class id, with ``pred_<label>_class`` its name and ``prob_<class>`` each
class's probability), ``error``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tapweight.errors import TapweightError
from tapweight.job.runner import pick_device, run_job
from tapweight.job.saved import SavedModel, load_final, pick_seeds
from tapweight.method.final import outputs_and_labels
from tapweight.plugin.specs import Inputs

log = logging.getLogger(__name__)
SHOW_INVALID = 5  # invalid rows named in the log line


def predict(run: str | Path, data: str | Path, seed: int | None = None, device: str = "auto",
            columns: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per data row of ``data``: the final model's predictions (see the module docstring).
    ``columns`` name the file's input columns where they differ from the run's data, as domain
    options (``{"smiles_column": "SMILES"}``, ``{"text_column": "review"}``)."""

    run = Path(run)
    job = with_columns(run_job(run), columns or {})
    seeds = pick_seeds(job, run, seed)
    if not Path(data).is_file():
        raise TapweightError(f"--data '{data}' is not a file of inputs to score")
    dev = pick_device(device)
    first = load_final(job, run, seeds[0])
    inputs = first.predictor.read(str(data))
    valid = inputs.valid
    chosen = [inputs.inputs[i] for i in valid]
    scores = [seed_scores(first if k == seeds[0] else load_final(job, run, k), chosen, dev) for k in seeds]
    frame = prediction_frame(inputs, valid, np.mean(scores, axis=0), first.info)
    bad = [(i + 1, e) for i, e in enumerate(inputs.errors) if e]
    log.info("scored %d of %d inputs of %s with the final model of seed%s %s%s", len(valid),
             len(inputs.inputs), inputs.source or data, "s" if len(seeds) > 1 else "",
             ", ".join(map(str, seeds)), " (mean of their predictions)" if len(seeds) > 1 else "")
    if bad:
        shown = "; ".join(f"row {r}: {e}" for r, e in bad[:SHOW_INVALID])
        log.warning("%d of %d inputs not scored (their reason is in column 'error'): %s%s", len(bad),
                    len(inputs.inputs), shown, "; ..." if len(bad) > SHOW_INVALID else "")
    return frame


def with_columns(job, columns: dict[str, str]):
    """``job`` whose domain options name the input columns ``columns`` gives (one line for an
    option the domain does not have)."""
    options = job.cfg.options
    for name in columns:
        if options is None or not hasattr(options, name):
            flag = "--" + name.replace("_", "-")
            raise TapweightError(f"{flag} names a column the '{job.domain.name}' domain does not read; "
                                 f"its options: tapweight list options {job.domain.name}")
    if not columns:
        return job
    return replace(job, cfg=replace(job.cfg, options=replace(options, **columns)))


def seed_scores(saved: SavedModel, inputs: list, device: torch.device) -> np.ndarray:
    """``[n, T]`` probabilities (``bce``) or values in the targets' units (``mse``), or
    ``[n, C]`` class probabilities (``ce``) of one seed's model on valid raw ``inputs``."""
    loss = saved.info["loss"]
    width = saved.info["n_outputs"]
    if not inputs:
        return np.zeros((0, width))
    dataset = saved.predictor.dataset(inputs)
    outputs, _ = outputs_and_labels(saved.model.to(device), dataset, saved.predictor.collate,
                                    saved.cfg.final.batch_size, device, saved.cfg.num_workers)
    if loss == "bce":
        return torch.sigmoid(outputs).numpy()
    if loss == "ce":
        return torch.softmax(outputs, dim=-1).numpy()
    values = outputs.numpy()
    return saved.scaler.inverse(values) if saved.scaler is not None else values


def shown(value) -> str | None:
    """An input as text in the output (a pair of texts joined by a tab), or None."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "\t".join(value)
    return None


def prediction_frame(inputs: Inputs, valid: np.ndarray, scores: np.ndarray, info: dict) -> pd.DataFrame:
    """The output table: every row of the file, predictions where the row was valid."""
    n = len(inputs.inputs)
    frame = pd.DataFrame({"row": np.arange(1, n + 1)})
    texts = [shown(x) for x in inputs.inputs]
    if all(t is not None for t in texts):
        frame["input"] = texts
    labels, classes = info["label_names"], info["classes"]

    def column(values: np.ndarray, dtype: str | type = "float64") -> pd.Series:
        full = pd.Series([None] * n, dtype=dtype)  # empty where the row was not scored
        full.iloc[valid] = values
        return full

    if info["loss"] == "ce":
        ids = scores.argmax(-1) if len(scores) else np.zeros(0, dtype=int)
        frame[f"pred_{labels[0]}"] = column(ids, "Int64")
        if classes:
            frame[f"pred_{labels[0]}_class"] = column(np.array(classes, dtype=object)[ids], object)
        for c in range(scores.shape[1]):
            frame[f"prob_{classes[c] if classes else c}"] = column(scores[:, c])
    else:
        for t, name in enumerate(labels):
            frame[f"pred_{name}"] = column(scores[:, t])
    frame["error"] = list(inputs.errors)
    return frame
