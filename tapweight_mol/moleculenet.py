"""MoleculeNet data sets (Wu et al., Chem. Sci. 2018): where they live and how to read them.

Files are the canonical CSVs deepchem serves, with their own column names. A file is found
at ``cfg.data`` (a file, or a folder holding it), in the data directory
(``$TAPWEIGHT_DATA_DIR``, as ``moleculenet/<name>.csv`` or ``<name>.csv``), or downloaded
from deepchem's bucket on first use into the data directory. Rows whose SMILES RDKit
cannot parse, or that are too long to parse safely (`MAX_SMILES`),
are dropped and reported (BBBP has 11).
"""

from __future__ import annotations

import logging
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tapweight import Table, TapweightError, data_dir

log = logging.getLogger(__name__)

S3 = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"
SHOW_INVALID = 5  # invalid rows named in the warning


@dataclass(frozen=True)
class MoleculeNetSet:
    """One MoleculeNet CSV: its download, SMILES column and label columns.

    ``tasks=()`` means every column but the SMILES column (SIDER, ToxCast). ``invalid`` is the
    number of rows of the published file that RDKit does not parse: leaving out exactly those is
    the expected reading (every MoleculeNet loader does), logged without a warning.
    """

    name: str
    url: str
    smiles: str
    tasks: tuple[str, ...]
    loss: str  # bce | mse
    description: str
    invalid: int = 0


MUV_TASKS = tuple(f"MUV-{n}" for n in (466, 548, 600, 644, 652, 689, 692, 712, 713, 733, 737,
                                       810, 832, 846, 852, 858, 859))
TOX21_TASKS = ("NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
               "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53")

SETS = {s.name: s for s in (
    MoleculeNetSet("bbbp", S3 + "BBBP.csv", "smiles", ("p_np",), "bce",
                   "blood-brain barrier penetration, 1 task", invalid=11),
    MoleculeNetSet("bace", S3 + "bace.csv", "mol", ("Class",), "bce",
                   "BACE-1 inhibition, 1 task"),
    MoleculeNetSet("clintox", S3 + "clintox.csv.gz", "smiles", ("FDA_APPROVED", "CT_TOX"), "bce",
                   "FDA approval and clinical-trial toxicity, 2 tasks", invalid=4),
    MoleculeNetSet("hiv", S3 + "HIV.csv", "smiles", ("HIV_active",), "bce",
                   "inhibition of HIV replication, 1 task"),
    MoleculeNetSet("muv", S3 + "muv.csv.gz", "smiles", MUV_TASKS, "bce",
                   "maximum unbiased validation, 17 tasks"),
    MoleculeNetSet("sider", S3 + "sider.csv.gz", "smiles", (), "bce",
                   "side effects by organ class, 27 tasks"),
    MoleculeNetSet("tox21", S3 + "tox21.csv.gz", "smiles", TOX21_TASKS, "bce",
                   "Tox21 toxicity assays, 12 tasks"),
    MoleculeNetSet("toxcast", S3 + "toxcast_data.csv.gz", "smiles", (), "bce",
                   "ToxCast in-vitro assays, 617 tasks"),
    MoleculeNetSet("esol", S3 + "delaney-processed.csv", "smiles",
                   ("measured log solubility in mols per litre",), "mse",
                   "aqueous solubility (log mol/L), regression"),
    MoleculeNetSet("freesolv", S3 + "SAMPL.csv", "smiles", ("expt",), "mse",
                   "hydration free energy (kcal/mol), regression"),
    MoleculeNetSet("lipophilicity", S3 + "Lipophilicity.csv", "smiles", ("exp",), "mse",
                   "octanol/water distribution coefficient (logD), regression"),
)}


class Molecules(list):
    """The SMILES of a `Table`, with the rows dropped as invalid.

    ``skipped`` holds ``(row, smiles)`` of the rows RDKit could not parse (row numbers
    count data rows from 1, as a spreadsheet would below its header).
    """

    def __init__(self, smiles, skipped=()):
        super().__init__(smiles)
        self.skipped = list(skipped)


def _suffixes(spec: MoleculeNetSet) -> tuple[str, ...]:
    return (".csv.gz", ".csv") if spec.url.endswith(".gz") else (".csv", ".csv.gz")


def local_candidates(spec: MoleculeNetSet, folder: Path) -> list[Path]:
    """Where a copy of ``spec`` may sit inside ``folder``."""
    remote = spec.url.rsplit("/", 1)[1]
    names = [f"{spec.name}{s}" for s in _suffixes(spec)] + [remote]
    return [folder / sub / n for sub in ("moleculenet", ".") for n in names]


def locate(spec: MoleculeNetSet, data: str) -> Path:
    """The file to read for ``spec``: ``data``, the data directory, or a fresh download."""
    if data:
        path = Path(data).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            for candidate in local_candidates(spec, path):
                if candidate.is_file():
                    return candidate
            names = ", ".join(dict.fromkeys(p.name for p in local_candidates(spec, path)))
            raise TapweightError(f"no {spec.name} file in folder '{data}' (looked for {names} there and "
                                 f"in moleculenet/): put it there, or pass the file itself as --data FILE")
        raise TapweightError(f"data path '{data}' does not exist")
    for candidate in local_candidates(spec, data_dir()):
        if candidate.is_file():
            return candidate
    return download(spec)


def download(spec: MoleculeNetSet) -> Path:
    """Fetch ``spec`` from deepchem's bucket into the data directory (once)."""
    target = data_dir() / "moleculenet" / f"{spec.name}{_suffixes(spec)[0]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    log.info("downloading %s from %s", spec.name, spec.url)
    try:
        with urllib.request.urlopen(spec.url, timeout=30) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TapweightError(
            f"cannot download {spec.name} ({err}); put {spec.url.rsplit('/', 1)[1]} at {target} "
            f"or pass --data PATH") from None
    tmp.replace(target)
    return target


def read_table(spec: MoleculeNetSet, path: Path) -> Table:
    """The labelled molecules of ``path``, invalid SMILES dropped (and reported)."""
    import numpy as np  # here, not at the top: the plugin's registration reads SETS only
    import pandas as pd

    from tapweight_mol.render import canonical, quiet_rdkit

    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise TapweightError(f"cannot read {path} as CSV: {err}") from None
    tasks = list(spec.tasks) or [c for c in frame.columns if c != spec.smiles]
    missing = [c for c in [spec.smiles, *tasks] if c not in frame.columns]
    if missing:
        quiet_rdkit()
        headerless = any(_is_number(c) or canonical(c) is not None for c in map(str, frame.columns))
        wanted = ", ".join(repr(c) for c in [spec.smiles, *spec.tasks])
        hint = (f"; its first row looks like data, not a header: add a header line naming the "
                f"columns ({spec.name} reads {wanted})" if headerless else "")
        raise TapweightError(f"{path} has no column {', '.join(map(repr, missing))} (columns: "
                             f"{', '.join(map(str, frame.columns[:8]))}...); is it the {spec.name} CSV?{hint}")
    numeric = frame[tasks].apply(pd.to_numeric, errors="coerce")  # empty cells: missing labels
    not_numbers = numeric.isna() & frame[tasks].notna()
    if not_numbers.any().any():
        row, column = next((r, c) for c in tasks for r in np.flatnonzero(not_numbers[c]))
        raise TapweightError(f"{path}: label column '{column}' holds {frame[column].iloc[row]!r} "
                             f"(row {row + 1}); labels must be numbers (0/1 for classification)")
    labels = numeric.to_numpy(np.float32)
    quiet_rdkit()
    keep, skipped = [], []
    for row, smiles in enumerate(frame[spec.smiles].tolist(), start=1):
        (keep if canonical(smiles) is not None else skipped).append((row, smiles))
    if not keep:
        raise TapweightError(f"no SMILES in column '{spec.smiles}' of {path} is valid for RDKit")
    warn_invalid(path.name, len(skipped), skipped, len(frame), expected=spec.invalid)
    rows = np.array([r - 1 for r, _ in keep])
    return Table(inputs=Molecules([s for _, s in keep], skipped), labels=labels[rows],
                 label_names=tuple(tasks), source=str(path))


def warn_invalid(source: str, skipped: int, rows: list[tuple[int, str]], total: int,
                 expected: int = 0) -> None:
    """The one line about the ``skipped`` invalid SMILES of ``total`` rows, naming the first
    ``SHOW_INVALID`` of ``rows`` (row from 1, SMILES); a labelled file's and a corpus' alike.
    A warning, but for exactly the ``expected`` invalid rows of a published benchmark file."""
    from tapweight_mol.render import abbreviate

    if skipped:
        shown = ", ".join(f"row {r} ({abbreviate(s)})" for r, s in rows[:SHOW_INVALID])
        known = " (the published file's known invalid rows)" if skipped == expected else ""
        log.log(logging.INFO if known else logging.WARNING, "%s: skipped %d invalid SMILES of %d%s: %s%s",
                source, skipped, total, known, shown, ", ..." if skipped > SHOW_INVALID else "")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load(name: str, cfg) -> Table:
    """``DatasetSpec.load`` for MoleculeNet set ``name``."""
    spec = SETS[name]
    return read_table(spec, locate(spec, cfg.data))
