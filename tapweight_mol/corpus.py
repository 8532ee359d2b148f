"""Pretraining corpora of SMILES: read once, canonicalized once, kept compact.

A corpus file is a SMILES file (the first field of each line; an optional ``smiles`` header)
or a CSV/TSV with a ``smiles`` column, such as ImageMol's ``index,k_100,k_1000,k_10000,smiles``
with its precomputed cluster ids. Canonicalizing a million SMILES takes minutes of CPU, so
the result (the canonical SMILES of the valid rows, the ids they carry, the invalid rows) is
cached under ``<cache>/corpora/``, keyed by the file's bytes: the next run on the same file
reads it back in about a second.

The SMILES are held as a `SmilesList` (two arrays, no Python string per molecule):
DataLoader workers forked from the main process share its pages instead of copying them as
reference counts change.

This module imports no torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tapweight import TapweightError
from tapweight_mol.moleculenet import SHOW_INVALID
from tapweight_mol.render import canonical, parallel_map

VERSION = "corpus-1"  # change when the recipe changes, so old caches are not reused
CLUSTER_COLUMNS = {100: "k_100", 1000: "k_1000", 10000: "k_10000"}  # ImageMol's CSV


class SmilesList(Sequence):
    """SMILES strings as UTF-8 bytes ``data`` and ``offsets`` (string i is
    ``data[offsets[i]:offsets[i + 1]]``)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets
        self._digest: str | None = None

    @classmethod
    def of(cls, smiles: Iterable[str]) -> SmilesList:
        encoded = [s.encode() for s in smiles]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode()

    def digest(self) -> str:
        """A hex digest of the strings (and their order)."""
        if self._digest is None:
            h = hashlib.sha1(self.offsets.tobytes())
            h.update(self.data.tobytes())
            self._digest = h.hexdigest()
        return self._digest


def canonicalize(smiles: Sequence[str], workers: int) -> tuple[list[str], list[tuple[int, str]]]:
    """Canonical SMILES of the parsable entries, ``(row, smiles)`` of the others (from 1)."""
    canon = parallel_map(canonical, list(smiles), workers, chunksize=1024, inline_below=20_000)
    keep = [c for c in canon if c is not None]
    bad = [(i + 1, s) for i, (s, c) in enumerate(zip(smiles, canon, strict=True)) if c is None]
    return keep, bad


@dataclass
class CorpusFile:
    """A corpus file, prepared: canonical SMILES of its valid rows, in file order."""

    smiles: SmilesList
    precomputed: dict[int, np.ndarray]  # k -> ImageMol's cluster id of each kept row
    invalid: int  # rows RDKit could not parse (skipped)
    shown: list[tuple[int, str]]  # the first SHOW_INVALID of them: (row from 1, SMILES)
    cached: bool  # read back from the cache (prepared by an earlier run)


def file_digest(file: Path) -> str:
    h = hashlib.sha1(VERSION.encode())
    with open(file, "rb") as stream:
        while block := stream.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_raw(file: Path, path: str) -> tuple[list[str], dict[int, np.ndarray]]:
    """The SMILES of every row of a corpus file, and the cluster ids it carries."""
    if ".csv" in file.suffixes or ".tsv" in file.suffixes:
        frame = pd.read_csv(file, sep="\t" if ".tsv" in file.suffixes else ",")
        column = next((c for c in frame.columns if str(c).lower() == "smiles"), None)
        if column is None:
            raise TapweightError(f"corpus {path} has no 'smiles' column (columns: "
                                 f"{', '.join(map(str, frame.columns[:8]))})")
        precomputed = {k: frame[c].to_numpy() for k, c in CLUSTER_COLUMNS.items() if c in frame}
        return frame[column].tolist(), precomputed
    lines = [line.split()[0] for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return (lines[1:] if lines and lines[0].lower() == "smiles" else lines), {}


def prepare(file: Path, path: str, workers: int) -> CorpusFile:
    """Read and canonicalize a corpus file (``path`` as the user wrote it, for messages)."""
    try:
        raw, precomputed = read_raw(file, path)
    except (ValueError, pd.errors.ParserError) as err:  # empty, binary (UnicodeDecodeError), ragged
        reason = " ".join(str(err).split())[:100] or type(err).__name__
        raise TapweightError(f"corpus {path} is not a SMILES file or a CSV with a 'smiles' column "
                             f"({reason})") from None
    keep, bad = canonicalize(raw, workers)
    if not keep:
        raise TapweightError(f"corpus {path}: no SMILES is valid for RDKit")
    if bad and precomputed:
        rows = np.setdiff1d(np.arange(len(raw)), np.array([r - 1 for r, _ in bad]))
        precomputed = {k: v[rows] for k, v in precomputed.items()}
    return CorpusFile(SmilesList.of(keep), precomputed, len(bad), bad[:SHOW_INVALID], cached=False)


def read_corpus(path: str, workers: int, cache: Path) -> CorpusFile:
    """The prepared corpus of ``path``: from ``cache`` when this file was prepared before."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise TapweightError(f"corpus '{path}' is a folder: give one file (SMILES per line, or a CSV "
                             "with a 'smiles' column)")
    if not file.is_file():
        raise TapweightError(f"corpus file '{path}' does not exist")
    stored = cache / "corpora" / f"{file_digest(file)}.npz"
    if stored.exists():
        with np.load(stored) as z:
            return CorpusFile(SmilesList(z["data"], z["offsets"]),
                              {k: z[c] for k, c in CLUSTER_COLUMNS.items() if c in z},
                              int(z["invalid"]), list(zip(z["shown_rows"].tolist(), z["shown"].tolist())),
                              cached=True)
    prepared = prepare(file, path, workers)
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_name(f"{stored.stem}.{os.getpid()}.tmp.npz")
    rows, shown = zip(*prepared.shown) if prepared.shown else ((), ())
    np.savez(tmp, data=prepared.smiles.data, offsets=prepared.smiles.offsets,
             invalid=prepared.invalid, shown_rows=np.array(rows, dtype=np.int64),
             shown=np.array([str(s) for s in shown], dtype=str),
             **{CLUSTER_COLUMNS[k]: v for k, v in prepared.precomputed.items()})
    os.replace(tmp, stored)  # atomic: a concurrent run reads a whole file or none
    return prepared
