"""Reading a labelled text data set into a `TextTable`, through `datasets`.

Where the rows come from, first match wins: ``cfg.data`` (a folder of ``train``/``dev``/
``test`` files or one file; csv, tsv, json(l) or parquet), the data directory
``<data_dir>/nlp/<name>``, the Hugging Face hub. Each row remembers which file (split) it
came from, because the paper's GLUE protocol tests on the GLUE dev set.

Columns are found by name. A csv or tsv file without a header row (AG News's own CSVs, many
TAP data releases) is read with ``--set nlp.header=false``: its columns are then named by
position, ``0``, ``1``, ... (``--set nlp.text_column=1 --set nlp.label_column=0``), or by
``--set nlp.columns=[label,title,text]``. When a column is missing and the header row looks
like data (numbers, class names, sentences), the error says so and gives those options.
Class ids count from 0; ``nlp.label_base=1`` reads files that count from 1.

Split roles: ``train``; ``dev`` (``dev``, ``validation``, ``val``, their ``_matched``
MNLI forms); ``test`` (``test``, ``test_matched``). A test split without labels (GLUE's)
is dropped and the dev split becomes the test set, as the paper does. A folder without a
train file, or whose train rows are all unlabelled, is refused: training on dev or test
would report a number for a model fitted on the wrong rows. A single file is the train
split (split 8:1:1 at random), which is how to train on one labelled file of any name.
The run log says which file fed which split.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from datasets.exceptions import DatasetGenerationError

from tapweight import Table, TapweightError, adopt_library_handlers, data_dir
from tapweight_nlp.tasks import TextDataset

adopt_library_handlers()  # datasets prints through a stderr handler of its own: through ours instead

ROLES = {"train": "train", "dev": "dev", "validation": "dev", "val": "dev",
         "dev_matched": "dev", "validation_matched": "dev", "test": "test", "test_matched": "test"}
SUFFIXES = (".tsv", ".csv", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class TextTable(Table):
    """A `Table` of texts (str, or a (str, str) pair) that knows each row's split role."""

    parts: np.ndarray | None = None  # [N] str: "train" | "dev" | "test"
    classes: tuple[str, ...] = ()  # class names; () = regression
    notes: tuple[str, ...] = ()  # what loading skipped, for the run log


def load_table(spec: TextDataset, cfg) -> TextTable:
    """The data set ``spec`` from ``cfg.data``, the data directory or the hub."""
    opts = cfg.options
    columns = _columns(spec, opts)
    if cfg.data:
        path = Path(cfg.data).expanduser()
        if not path.exists():
            raise TapweightError(f"--data '{cfg.data}' does not exist")
        return _from_splits(_read_local(path, opts), spec, columns, str(path), opts)
    local = data_dir() / "nlp" / spec.name
    if local.is_dir():
        return _from_splits(_read_local(local, opts), spec, columns, str(local), opts)
    hub = _read_hub(spec, columns, local)
    return _from_splits({name: (ds, f"hub split '{name}'") for name, ds in hub.items()}, spec, columns,
                        f"hub:{spec.hub}", opts)


def _columns(spec: TextDataset, opts) -> tuple[tuple[str, ...], str]:
    """(text columns, label column), with the user's ``nlp.*_column`` overrides."""
    text = list(spec.text_columns)
    if opts.text_column:
        text[0] = opts.text_column
    if opts.pair_column:
        text = [text[0], opts.pair_column]
    return tuple(text), opts.label_column or spec.label_column


def _read_local(path: Path, opts) -> dict[str, tuple[datasets.Dataset, str]]:
    """One `datasets.Dataset` per recognised file: ``{split name: (rows, file name)}``."""
    if path.is_file():
        return {"train": (_read_file(path, opts), path.name)}
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
    found = ", ".join(p.name for p in files) or "no data files"
    named: dict[str, Path] = {}
    for file in (p for p in files if p.stem.lower() in ROLES):
        if file.stem.lower() in named:
            raise TapweightError(f"folder '{path}' has two {file.stem} files ({named[file.stem.lower()].name}, "
                                 f"{file.name}): keep one")
        named[file.stem.lower()] = file
    if not named:
        raise TapweightError(
            f"folder '{path}' has no train/dev/test files (found: {found}); name them "
            f"train, dev and test with a suffix among {', '.join(SUFFIXES)}")
    if "train" not in named:
        raise TapweightError(
            f"folder '{path}' has no train file (looked for {', '.join('train' + s for s in SUFFIXES)}; "
            f"found: {found}): add it, or pass one labelled file as --data FILE to split it 8:1:1")
    order = ("train", "dev", "test")
    return {name: (_read_file(named[name], opts), named[name].name)
            for name in sorted(named, key=lambda n: order.index(ROLES[n]))}


def _read_file(path: Path, opts, blank_lines: bool = False) -> datasets.Dataset:
    """A data file as a data set; ``blank_lines``: a blank line of a csv or tsv file is a row of
    empty cells (``tapweight predict``: row numbers stay the file's lines), else it is skipped."""
    suffix = path.suffix.lower()
    builder, kwargs = {".parquet": ("parquet", {}), ".json": ("json", {}), ".jsonl": ("json", {})}.get(
        suffix, ("csv", {"keep_default_na": False, "na_values": [""]}))  # only empty cells are missing
    if builder == "csv":
        kwargs["skip_blank_lines"] = not blank_lines
    if suffix == ".tsv":
        kwargs.update(sep="\t", quoting=csv.QUOTE_NONE)  # GLUE's tsv files hold bare quotes
    if not opts.header:
        if builder != "csv":
            raise TapweightError(f"nlp.header=false is for csv and tsv files; {path} is {suffix[1:]}, "
                                 "whose records name their fields: drop nlp.header=false")
        kwargs["column_names"] = _headerless_columns(path, opts.columns, kwargs)
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a local file reads in a blink: no bars before an error
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise TapweightError(f"could not read '{path}' as {suffix[1:]}: {reason}") from None
    finally:
        if shown:
            datasets.enable_progress_bars()


def _headerless_columns(path: Path, names: list[str], kwargs: dict) -> list[str]:
    """Column names for a file without a header row: ``names``, or the positions 0, 1, ..."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        first = next(csv.reader(fh, delimiter=kwargs.get("sep", ","),
                                quoting=kwargs.get("quoting", csv.QUOTE_MINIMAL)), [])
    if names and len(names) != len(first):
        raise TapweightError(f"{path} has {len(first)} columns, nlp.columns names {len(names)} "
                             f"({', '.join(names)}): give one name per column")
    return list(names) if names else [str(i) for i in range(len(first))]


def _looks_like_data(names: list[str], spec: TextDataset) -> bool:
    """A header row that reads like an example: a number, a class name, or a sentence."""
    classes = {c.lower() for c in spec.classes}

    def data_like(name: str) -> bool:
        try:
            float(name)
            return True
        except ValueError:
            return name.strip().lower() in classes or len(name.split()) >= 4

    return any(data_like(str(n)) for n in names)


def _missing_columns_hint(names: list[str], spec: TextDataset, opts) -> str:
    """What to do when a column is missing: headerless files, or positions after header=false."""
    if not opts.header and not opts.columns:
        return (f"; without a header row the columns are numbered 0..{len(names) - 1}: e.g. "
                "--set nlp.text_column=1 --set nlp.label_column=0, or name them with "
                "--set nlp.columns=[label,text]")
    if opts.header and _looks_like_data(names, spec):
        return ("; the first row looks like data, not a header: if the files have no header row, "
                "--set nlp.header=false and give the columns by position (--set nlp.text_column=1 "
                "--set nlp.label_column=0) or by name (--set nlp.columns=[label,text])")
    return ""


def _read_hub(spec: TextDataset, columns, local: Path) -> Mapping[str, datasets.Dataset]:
    fix = (f"pass --data DIR (train/dev/test files: {', '.join(SUFFIXES)}; columns "
           f"{', '.join(columns[0])}, {columns[1]}) or put them in {local}")
    if datasets.config.HF_HUB_OFFLINE:
        raise TapweightError(f"no local copy of '{spec.name}' and the hub is offline: {fix}")
    try:
        return datasets.load_dataset(spec.hub, spec.hub_config)
    except OSError as err:  # ConnectionError, missing repository, no disk
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TapweightError(f"could not load '{spec.name}' from the hub ({reason}): {fix}") from None


def _from_splits(splits: Mapping[str, tuple[datasets.Dataset, str]], spec: TextDataset, columns,
                 source: str, opts) -> TextTable:
    """Rows of every split with a known role, labels converted; unlabelled test dropped.
    ``splits`` maps a split name to its rows and where they came from (a file name)."""
    text_columns, label_column = columns
    frames, notes, origins = [], [], {}
    for name, (ds, origin) in splits.items():
        role = ROLES.get(name.lower())
        if role is None:
            notes.append(f"ignored split '{name}' ({len(ds)} rows)")
            continue
        missing = [c for c in text_columns if c not in ds.column_names]
        hint = _missing_columns_hint(ds.column_names, spec, opts)
        if missing:
            raise TapweightError(
                f"{source} split '{name}' has no column {', '.join(repr(c) for c in missing)} "
                f"(columns: {_shown(ds.column_names)}); set --set nlp.text_column=NAME "
                f"(and nlp.pair_column for sentence pairs){hint}")
        if label_column not in ds.column_names:
            if role == "test" and not hint:
                notes.append(f"split '{name}' has no labels: not used")
                continue
            raise TapweightError(
                f"{source} split '{name}' has no label column '{label_column}' "
                f"(columns: {_shown(ds.column_names)}); set --set nlp.label_column=NAME{hint}")
        frame = ds.select_columns([*text_columns, label_column]).to_pandas()
        frame.columns = [f"text{i}" for i in range(len(text_columns))] + ["label"]
        frame["label"] = _labels(frame["label"], spec, f"{source} split '{name}'", opts.label_base)
        frame["part"], frame["origin"] = role, origin
        unlabelled = int(frame["label"].isna().sum())
        if unlabelled == len(frame) and role == "test":
            notes.append(f"split '{name}' has no labels: not used")
            continue
        empty = frame[[c for c in frame.columns if c.startswith("text")]].isna().any(axis=1)
        if (dropped := int((empty | frame["label"].isna()).sum())):
            notes.append(f"split '{name}': skipped {dropped} rows without text or label")
        frames.append(frame[~empty & frame["label"].notna()])
        origins[origin] = (len(frames[-1]), role)
    if not frames:
        raise TapweightError(f"{source} has no labelled rows in a train, dev or test split")
    rows = pd.concat(frames, ignore_index=True)
    parts = rows["part"].to_numpy().astype(str)
    if not (parts == "train").any():
        read = ", ".join(f"{o}: {n} labelled {role} rows" for o, (n, role) in origins.items())
        raise TapweightError(f"{source} has no labelled train rows ({read}): label them, or pass one "
                             "labelled file as --data FILE to split it 8:1:1")
    dev_is_test = not (parts == "test").any() and (parts == "dev").any()
    if dev_is_test:
        parts = np.where(parts == "dev", "test", parts)  # GLUE: the dev set is the test set
        notes.append("no labelled test split: the dev split is the test set (GLUE protocol)")
    elif not (parts == "test").any():
        notes.append("no dev or test split: the rows are drawn into train/val/test 8:1:1 at random")
    notes.append("read " + ", ".join(f"{o} ({n} rows) as {'test' if dev_is_test and role == 'dev' else role}"
                                     for o, (n, role) in origins.items()))
    texts = [rows[f"text{i}"].astype(str).tolist() for i in range(len(text_columns))]
    inputs = texts[0] if len(texts) == 1 else list(zip(*texts))
    labels = rows["label"].to_numpy(dtype=float).reshape(-1, 1)
    return TextTable(inputs, labels, (spec.name,), source, parts=parts, classes=spec.classes,
                     notes=tuple(notes))


def _shown(names: list[str], width: int = 40) -> str:
    """Column names for a message, each cut short (a header row that is data holds sentences)."""
    return ", ".join(n if len(n) <= width else n[:width - 3] + "..." for n in map(str, names))


def _labels(values: pd.Series, spec: TextDataset, where: str, base: int = 0) -> pd.Series:
    """Labels as floats: class ids (from ids or class names) or scores; NaN = unlabelled.

    Class ids count from ``base`` in the file (``nlp.label_base``); id ``base - 1`` (-1, the
    hub's mark for a hidden test label) counts as unlabelled.
    """
    if not spec.classes:
        converted = pd.to_numeric(values, errors="coerce")
        not_numbers = converted.isna() & values.notna()
        if not_numbers.any():
            first = values[not_numbers].iloc[0]
            raise TapweightError(f"{where}: labels of '{spec.name}' must be numbers, found "
                                 f"{first!r} ({int(not_numbers.sum())} such rows)")
        return converted
    index = {c.lower(): i for i, c in enumerate(spec.classes)}

    def one(value):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return np.nan
        text = str(value).strip().lower()
        if text in index:
            return float(index[text])
        try:
            number = float(text) - base
        except ValueError:
            raise TapweightError(
                f"{where}: unknown label '{value}' for '{spec.name}'; "
                f"expected a class id or one of {', '.join(spec.classes)}") from None
        if number == -1:
            return np.nan
        if number != int(number) or not 0 <= number < len(spec.classes):
            counted = ("; labels that count classes from 1: --set nlp.label_base=1"
                       if base == 0 and number == len(spec.classes) else "")
            raise TapweightError(f"{where}: label {value} is not a class id of '{spec.name}' "
                                 f"({base}..{len(spec.classes) - 1 + base}){counted}")
        return number

    return values.map(one).astype(float)
