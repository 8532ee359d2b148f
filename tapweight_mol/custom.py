"""``tapweight run mol custom --data assay.csv``: any CSV of SMILES and labels.

The SMILES are in ``mol.smiles_column`` (default ``smiles``), the labels in
``mol.target_columns`` (default: every other column). Columns that hold only 0 and 1 (empty
cells: missing) make a classification task, one binary output per column (multi-task when
there are several); anything else makes a regression task, one value per column, trained on
standardised targets and scored per column in the targets' units. ``mol.task_type`` states
the type instead. The split is the domain's scaffold split unless ``--set split=`` names
another (``random_scaffold``, ``random``). Regression runs at the learning rates of the
MoleculeNet regression sets (`REGRESSION_DEFAULTS`).
"""

from __future__ import annotations

from pathlib import Path

from tapweight import Table, TapweightError, custom_task, data_name, is_classification
from tapweight_mol.moleculenet import MoleculeNetSet, read_table
from tapweight_mol.options import DEFAULT_STEPS, REGRESSION_DEFAULTS


def _data(cfg) -> Path:
    if not cfg.data:
        raise TapweightError("mol/custom trains on your CSV: pass --data FILE and name its columns with "
                             "--set mol.smiles_column=NAME --set mol.target_columns=[NAME,...]")
    path = Path(cfg.data).expanduser()
    if not path.is_file():
        raise TapweightError(f"--data '{cfg.data}' is not a file: mol/custom reads one CSV of SMILES "
                             "and labels (the split is drawn from it)")
    return path


def _spec(cfg, targets: list[str], loss: str) -> MoleculeNetSet:
    opts = cfg.options
    return MoleculeNetSet(opts.name or data_name(cfg.data), "", opts.smiles_column, tuple(targets), loss,
                          "your own CSV")


def target_columns(cfg) -> list[str]:
    """The label columns: ``mol.target_columns``, else every column but the SMILES (read
    from the header)."""
    import pandas as pd

    opts = cfg.options
    path = _data(cfg)
    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise TapweightError(f"cannot read {path} as CSV: {err}") from None
    wanted = list(opts.target_columns) or [c for c in columns if c != opts.smiles_column]
    missing = [c for c in [opts.smiles_column, *wanted] if c not in columns]
    if missing:
        raise TapweightError(f"{path} has no column {', '.join(map(repr, missing))} (columns: "
                             f"{', '.join(map(str, columns[:12]))}); name them with --set mol.smiles_column=NAME "
                             "--set mol.target_columns=[NAME,...]")
    if not wanted:
        raise TapweightError(f"{path} has no label column besides '{opts.smiles_column}'")
    return wanted


def fit(cfg):
    """``TaskSpec.fit`` of ``mol/custom``: the label columns from the header and the task type
    from their values, unless the options state them."""
    import pandas as pd

    opts = cfg.options
    targets, task_type = list(opts.target_columns), opts.task_type
    if not targets or task_type == "auto":
        targets = target_columns(cfg)
    if task_type == "auto":
        frame = pd.read_csv(_data(cfg), usecols=targets)
        cells = pd.Series(frame.to_numpy().ravel()).dropna()  # empty cells: missing labels
        values = pd.to_numeric(cells, errors="coerce")
        if values.isna().any():
            raise TapweightError(f"{cfg.data}: the label columns {', '.join(targets)} hold text; labels must "
                                 "be numbers (0/1 for classification)")
        binary = set(values.unique()) <= {0.0, 1.0}
        task_type = "classification" if binary and is_classification(values.tolist(), "auto") else "regression"
    classification = task_type == "classification"
    title = opts.name or data_name(cfg.data or "custom")
    kind = ("classification" if classification else "regression") + f" of {', '.join(targets)}"
    return custom_task("mol", loss="bce" if classification else "mse", metric=opts.metric,
                       metric_option="mol.metric", title=title, split="scaffold",
                       description=f"{title}: {kind}", overrides={} if classification else REGRESSION_DEFAULTS,
                       settled={"mol.task_type": task_type, "mol.target_columns": targets, "mol.name": title},
                       defaults={"steps": DEFAULT_STEPS})


def load(cfg) -> Table:
    """``DatasetSpec.load`` of ``mol.custom``: the CSV's molecules and label columns."""
    opts = cfg.options
    return read_table(_spec(cfg, list(opts.target_columns), "bce" if opts.task_type == "classification" else "mse"),
                      _data(cfg))
