"""From a loaded MoleculeNet table (or a corpus file) to the engine's image datasets.

Task splits yield ``(image uint8 [3, S, S], labels float [T])`` and collate into
``(images float [B, 3, S, S] in [0, 1], labels [B, T])``. The level I corpus is the task's
training molecules by default (task-adaptive pretraining); ``--corpus FILE`` (a SMILES
file, or a CSV with a ``smiles`` column, e.g. ImageMol's ``index,k_100,k_1000,k_10000,
smiles`` with its precomputed cluster ids) replaces it. Corpus items carry their row index
so the MG objectives can look up cluster ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from tapweight import DomainData, Split, Table, TapweightError, TaskSpec
from tapweight.paths import cache_dir
from tapweight_mol.clusters import cluster_ids
from tapweight_mol.moleculenet import SHOW_INVALID
from tapweight_mol.render import abbreviate, canonical, parallel_map, quiet_rdkit, render

log = logging.getLogger(__name__)

CLUSTER_COLUMNS = {100: "k_100", 1000: "k_1000", 10000: "k_10000"}  # ImageMol's CSV


def cache_root(options) -> Path:
    """Rendered images and cluster ids live here (``mol.cache_dir``, else the tapweight cache)."""
    return Path(options.cache_dir).expanduser() if options.cache_dir else cache_dir() / "mol"


def read_image(path: Path) -> torch.Tensor:
    """A cached PNG as uint8 ``[3, S, S]``."""
    return decode_image(str(path), mode=ImageReadMode.RGB)


def to_float(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 images → one float batch ``[B, 3, S, S]`` in [0, 1]."""
    return torch.stack(images).float().div_(255)


class TaskImages(Dataset):
    """Images and labels of one split."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray):
        self.paths, self.labels = list(paths), torch.as_tensor(labels, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return read_image(self.paths[i]), self.labels[i]


def task_collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*items, strict=True)
    return to_float(list(images)), torch.stack(labels)  # [B, 3, S, S], [B, T]


class MolCorpus(Dataset):
    """The level I corpus: canonical SMILES, their images, and MG cluster ids on demand."""

    def __init__(self, smiles: list[str], paths: list[Path], cache: Path, workers: int = 0,
                 precomputed: dict[int, np.ndarray] | None = None):
        self.smiles, self.paths, self.cache, self.workers = smiles, paths, cache, workers
        self.precomputed = precomputed or {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return i, read_image(self.paths[i])

    @staticmethod
    def backbone_inputs(batch: dict) -> torch.Tensor:
        """What the backbone takes from a corpus batch: its images (the core's probes use it)."""
        return batch["image"]

    def clusters(self, k: int) -> tuple[torch.Tensor, int]:
        """Cluster id of every corpus molecule at granularity ``k``, and the number of ids."""
        if k in self.precomputed:
            ids = self.precomputed[k]
            return torch.tensor(ids, dtype=torch.long), max(k, int(ids.max()) + 1)
        ids, used = cluster_ids(self.smiles, k, self.cache, self.workers)
        return torch.tensor(ids, dtype=torch.long), used


def corpus_collate(items: list) -> dict[str, torch.Tensor]:
    index, images = zip(*items, strict=True)
    return {"image": to_float(list(images)), "index": torch.tensor(index)}  # [B, 3, S, S], [B]


def canonicalize(smiles: Sequence[str], workers: int) -> tuple[list[str], list[tuple[int, str]]]:
    """Canonical SMILES of the parsable entries, ``(row, smiles)`` of the others (from 1)."""
    canon = parallel_map(canonical, list(smiles), workers, chunksize=1024,
                         inline_below=20_000)
    keep = [c for c in canon if c is not None]
    bad = [(i + 1, s) for i, (s, c) in enumerate(zip(smiles, canon, strict=True)) if c is None]
    return keep, bad


def read_corpus(path: str, workers: int) -> tuple[list[str], dict[int, np.ndarray], list]:
    """SMILES (canonical), precomputed cluster ids and invalid rows of a corpus file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TapweightError(f"corpus file '{path}' does not exist")
    try:
        raw, precomputed = _read_corpus_file(file, path)
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
    return keep, precomputed, bad


def _read_corpus_file(file: Path, path: str) -> tuple[list, dict[int, np.ndarray]]:
    """The raw SMILES of a corpus file and the cluster ids it carries (ImageMol's CSV)."""
    precomputed: dict[int, np.ndarray] = {}
    if ".csv" in file.suffixes or ".tsv" in file.suffixes:
        frame = pd.read_csv(file, sep="\t" if ".tsv" in file.suffixes else ",")
        column = next((c for c in frame.columns if str(c).lower() == "smiles"), None)
        if column is None:
            raise TapweightError(f"corpus {path} has no 'smiles' column (columns: "
                                 f"{', '.join(map(str, frame.columns[:8]))})")
        raw = frame[column].tolist()
        precomputed = {k: frame[c].to_numpy() for k, c in CLUSTER_COLUMNS.items() if c in frame}
    else:  # SMILES file: the first field of each line; an optional "smiles" header
        lines = [line.split()[0] for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        raw = lines[1:] if lines and lines[0].lower() == "smiles" else lines
    return raw, precomputed


def _report_invalid(what: str, bad: list, total: int) -> None:
    """One warning naming the first invalid rows (the run log's only report of them)."""
    shown = [f"row {r}: {abbreviate(s)}" for r, s in bad[:SHOW_INVALID]]
    if bad:
        log.warning("%s: skipped %d invalid SMILES of %d (%s%s)", what, len(bad), total,
                    "; ".join(shown), "; ..." if len(bad) > SHOW_INVALID else "")


def build_data(cfg, table: Table, split: Split, task: TaskSpec) -> DomainData:
    """``Domain.build_data``: render (or reuse) every image, build the splits and the corpus.

    ``task`` is not needed: molecular labels are float columns whatever the loss."""
    options = cfg.options
    quiet_rdkit()
    root = cache_root(options)
    size, workers = options.image_size, options.render_workers
    smiles, bad = canonicalize(table.inputs, workers)
    if bad:  # tables from tapweight_mol's loaders hold only valid SMILES
        raise TapweightError(
            f"{table.source}: {len(bad)} rows have invalid SMILES (row {bad[0][0]})")
    paths, drawn = render(smiles, size, root / "images", workers)
    info = {  # the loader's warning has said which rows were invalid: not repeated here
        "image_size": size,
        "images_drawn": drawn,
        "images_from_cache": len(paths) - drawn,
        "image_cache": str(root / "images"),
    }

    def part(rows: np.ndarray) -> TaskImages:
        return TaskImages([paths[i] for i in rows], table.labels[rows])

    if cfg.corpus:
        corpus_smiles, precomputed, corpus_bad = read_corpus(cfg.corpus, workers)
        corpus_paths, corpus_drawn = render(corpus_smiles, size, root / "images", workers)
        _report_invalid(cfg.corpus, corpus_bad, len(corpus_smiles) + len(corpus_bad))
        info.update(corpus=cfg.corpus, corpus_images_drawn=corpus_drawn,
                    corpus_precomputed_clusters=sorted(precomputed))
    else:
        corpus_smiles = [smiles[i] for i in split.train]
        corpus_paths, precomputed = [paths[i] for i in split.train], {}
        info.update(corpus="the task's training molecules (task-adaptive)")
    info["corpus_molecules"] = len(corpus_smiles)
    corpus = MolCorpus(corpus_smiles, corpus_paths, root, workers, precomputed)
    return DomainData(corpus=corpus, corpus_collate=corpus_collate, train=part(split.train),
                      val=part(split.val), test=part(split.test), task_collate=task_collate,
                      info=info)
