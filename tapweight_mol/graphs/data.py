"""Molecules as graph batches for the GNN backbones, cached as images are.

Task splits yield ``(Data, labels float [T])`` and collate into ``(Batch, labels [B, T])``;
corpus items ``(row, Data)`` collate into ``{"graph": Batch, "index": LongTensor [B]}``
(``index``: the molecule's row in the corpus, for the MG-k cluster ids), the image
batches' layout with ``graph`` in place of ``image``.

A molecule is featurized (featurize.py) the first time a batch needs it and kept in the
image store's SQLite shards (store.py) under ``<cache>/graphs``, so a large corpus starts
training at once and later runs read its graphs back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tapweight_mol.graphs.featurize import smiles_to_graph
from tapweight_mol.graphs.pyg import Batch, Data
from tapweight_mol.store import ImageStore

#: the cached layout's version: a change of featurization must change it
FORMAT = "hu2020-v1"


def encode(graph: Data) -> bytes:
    """``[n_atoms, n_edges, x…, edge_index…, edge_attr…]`` as int16 bytes."""
    n, e = len(graph.x), graph.edge_index.shape[1]
    parts = [torch.tensor([n, e]), graph.x.flatten(), graph.edge_index.flatten(), graph.edge_attr.flatten()]
    return torch.cat(parts).numpy().astype(np.int16).tobytes()


def decode(blob: bytes) -> Data:
    values = torch.from_numpy(np.frombuffer(blob, dtype=np.int16).astype(np.int64))
    n, e = int(values[0]), int(values[1])
    x, rest = values[2:2 + 2 * n].view(n, 2), values[2 + 2 * n:]
    return Data(x=x, edge_index=rest[:2 * e].view(2, e), edge_attr=rest[2 * e:].view(e, 2))


class GraphStore(ImageStore):
    """Encoded graphs keyed by canonical SMILES, in the image store's shards (``<root>/hu2020-v1``)."""

    def __init__(self, root: Path):
        super().__init__(root, FORMAT)  # type: ignore[arg-type]  # the key's tag, not pixels
        self.folder = Path(root) / FORMAT


class Graphs:
    """Canonical SMILES → graph: read from the store, or featurized and stored."""

    def __init__(self, store: GraphStore):
        self.store = store

    def __call__(self, smiles: str) -> Data:
        stored = self.store.get(smiles)
        if stored is not None:
            return decode(stored)
        graph = smiles_to_graph(smiles)
        self.store.put(smiles, encode(graph))
        return graph


def task_collate(items: list) -> tuple[Batch, torch.Tensor]:
    graphs, labels = zip(*items, strict=True)
    return Batch.from_data_list(list(graphs)), torch.stack(labels)


def corpus_collate(items: list) -> dict:
    index, graphs = zip(*items, strict=True)
    return {"graph": Batch.from_data_list(list(graphs)), "index": torch.tensor(index)}
