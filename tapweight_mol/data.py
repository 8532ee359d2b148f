"""From a loaded MoleculeNet table (or a corpus file) to the engine's image datasets.

Task splits yield ``(image uint8 [3, S, S], labels float [T])`` and collate into
``(images uint8 [B, 3, S, S], labels [B, T])``: the images cross to the device as bytes and
become float in [0, 1] there (the core's ``to_device``); with a GNN backbone (``mol.gcn``...)
the same datasets yield graphs instead and collate into graph batches (graphs/data.py). The level I corpus is the task's
training molecules by default (task-adaptive pretraining); ``--corpus FILE`` (corpus.py)
replaces it, and ``tapweight pretrain mol --corpus FILE`` trains on it alone
(`build_corpus`). Corpus items carry their row index so the MG objectives can look up
cluster ids.

Nothing is drawn before training: an item's image is read from the image store (store.py)
or, the first time, drawn where the item is loaded (a DataLoader worker, with
``num_workers``) and stored, so a million-molecule corpus starts training at once and fills
the cache as batches are drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_png
from torchvision.transforms.functional import pil_to_tensor

from tapweight import DomainData, Split, Table, TapweightError, TaskSpec, cache_dir
from tapweight_mol.clusters import cluster_ids
from tapweight_mol.corpus import SmilesList, canonicalize, read_corpus
from tapweight_mol.graphs import is_graph_backbone
from tapweight_mol.moleculenet import warn_invalid
from tapweight_mol.objectives import backbone_inputs
from tapweight_mol.render import draw, png, quiet_rdkit
from tapweight_mol.store import ImageStore


def cache_root(options) -> Path:
    """Images, prepared corpora and cluster ids live here (``mol.cache_dir``, else the
    tapweight cache)."""
    return Path(options.cache_dir).expanduser() if options.cache_dir else cache_dir() / "mol"


class Depictions:
    """SMILES → uint8 image ``[3, S, S]``: read from the store, or drawn and stored."""

    def __init__(self, store: ImageStore):
        self.store = store

    def __call__(self, smiles: str) -> torch.Tensor:
        stored = self.store.get(smiles)
        if stored is not None:
            return decode_png(torch.frombuffer(bytearray(stored), dtype=torch.uint8), ImageReadMode.RGB)
        image = draw(smiles, self.store.size)
        self.store.put(smiles, png(image))
        return pil_to_tensor(image)


class TaskImages(Dataset):
    """Images (or graphs: ``images`` is any SMILES → input callable) and labels of one split."""

    def __init__(self, smiles: SmilesList, labels: np.ndarray, images):
        self.smiles, self.images = smiles, images
        self.labels = torch.as_tensor(labels, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, i: int):
        return self.images(self.smiles[i]), self.labels[i]


def task_collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*items, strict=True)
    return torch.stack(images), torch.stack(labels)  # uint8 [B, 3, S, S] (float on the device), [B, T]


class MolCorpus(Dataset):
    """The level I corpus: canonical SMILES, their images (or graphs), and MG cluster ids on demand."""

    def __init__(self, smiles: SmilesList, images, cache: Path, workers: int = 0,
                 precomputed: dict[int, np.ndarray] | None = None):
        self.smiles, self.images, self.cache, self.workers = smiles, images, cache, workers
        self.precomputed = precomputed or {}

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, i: int):
        return i, self.images(self.smiles[i])

    #: what the backbone takes from a corpus batch: its images or graphs (the core's probes use it)
    backbone_inputs = staticmethod(backbone_inputs)

    def clusters(self, k: int) -> tuple[torch.Tensor, int]:
        """Cluster id of every corpus molecule at granularity ``k``, and the number of ids."""
        if k in self.precomputed:
            ids = self.precomputed[k]
            return torch.tensor(ids, dtype=torch.long), max(k, int(ids.max()) + 1)
        ids, used = cluster_ids(self.smiles, k, self.cache, self.workers)
        return torch.tensor(ids, dtype=torch.long), used


def corpus_collate(items: list) -> dict[str, torch.Tensor]:
    index, images = zip(*items, strict=True)
    return {"image": torch.stack(images), "index": torch.tensor(index)}  # uint8 [B, 3, S, S], [B]


def depictions(options) -> Depictions:
    """Images at ``mol.image_size``, from (and into) the image store under the cache."""
    return Depictions(ImageStore(cache_root(options) / "images", options.image_size))


@dataclass
class MoleculeInputs:
    """How the run's backbone sees molecules: images for the ResNet, graphs for the GNNs."""

    of: Callable  # canonical SMILES → one input
    task_collate: Callable
    corpus_collate: Callable
    info: dict


def inputs(cfg) -> MoleculeInputs:
    """The run's `MoleculeInputs`, from (and into) their store under the cache."""
    if is_graph_backbone(cfg.backbone):
        from tapweight_mol.graphs import data as graphs

        store = graphs.GraphStore(cache_root(cfg.options) / "graphs")
        return MoleculeInputs(graphs.Graphs(store), graphs.task_collate, graphs.corpus_collate,
                      {"inputs": "graphs (Hu et al.'s featurization)", "graph_cache": str(store.folder)})
    images = depictions(cfg.options)
    return MoleculeInputs(images, task_collate, corpus_collate,
                  {"image_size": cfg.options.image_size, "image_cache": str(images.store.folder)})


def build_corpus(cfg, path: str) -> DomainData:
    """``Domain.build_corpus``: the corpus file at ``path`` as the level I dataset (prepared
    once and cached, corpus.py); images or graphs are made as batches are drawn."""
    options = cfg.options
    quiet_rdkit()
    root = cache_root(options)
    prepared = read_corpus(path, options.render_workers, root)
    warn_invalid(path, prepared.invalid, prepared.shown, len(prepared.smiles) + prepared.invalid)
    made = inputs(cfg)
    info = {"corpus": path, "corpus_molecules": len(prepared.smiles),
            "corpus_prepared": "read from the cache" if prepared.cached else "canonicalized now, cached",
            "corpus_precomputed_clusters": sorted(prepared.precomputed), **made.info}
    corpus = MolCorpus(prepared.smiles, made.of, root, options.render_workers, prepared.precomputed)
    return DomainData(corpus=corpus, corpus_collate=made.corpus_collate, info=info)


def build_data(cfg, table: Table, split: Split, task: TaskSpec) -> DomainData:
    """``Domain.build_data``: the splits and the corpus; images (graphs) are made on first use.

    ``task`` is not needed: molecular labels are float columns whatever the loss."""
    options = cfg.options
    quiet_rdkit()
    canon, bad = canonicalize(table.inputs, options.render_workers)
    if bad:  # tables from tapweight_mol's loaders hold only valid SMILES
        raise TapweightError(
            f"{table.source}: {len(bad)} rows have invalid SMILES (row {bad[0][0]})")
    made = inputs(cfg)
    info = dict(made.info)  # the loader's warning has named the invalid rows

    def part(rows: np.ndarray) -> TaskImages:
        return TaskImages(SmilesList.of(canon[i] for i in rows), table.labels[rows], made.of)

    if cfg.corpus:
        from_file = build_corpus(cfg, cfg.corpus)
        info.update(from_file.info)
        corpus = from_file.corpus
    else:
        corpus = MolCorpus(SmilesList.of(canon[i] for i in split.train), made.of,
                           cache_root(options), options.render_workers)
        info.update(corpus="the task's training molecules (task-adaptive)",
                    corpus_molecules=len(corpus))
    return DomainData(corpus=corpus, corpus_collate=made.corpus_collate, train=part(split.train),
                      val=part(split.val), test=part(split.test), task_collate=made.task_collate,
                      info=info)
