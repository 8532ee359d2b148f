"""Rendering and loading throughput of molecule images (``python -m bench data``).

Level I consumes ``pretrain batch / step time`` images per second; the input pipeline must
deliver at least that or the GPU waits. Measured, in images per second, on real SMILES
(ImageMol's toy pretraining set by default), through tapweight_mol's own code:

- render, one process: RDKit drawing alone (``render.draw``);
- load without the cache: a DataLoader whose items are drawn on the fly (W workers), no store;
- load into the cache: the corpus dataset on an empty image store, as a first epoch runs it
  (W workers draw, encode PNG and store);
- load from the cache: the same dataset on the filled store (PNG decode), 0 and W workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from tapweight.errors import TapweightError

DEFAULT_SMILES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagemol" / "pretrain_toy.csv"


def read_smiles(path: Path, n: int) -> list[str]:
    """The first ``n`` SMILES of a CSV (its ``smiles`` column, else its last) or a ``.smi``
    file (the first field of each line, as RDKit's bundled NCI sample)."""
    if not path.is_file():
        raise TapweightError(f"SMILES file '{path}' does not exist: pass --smiles FILE")
    if path.suffix == ".smi":
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()][:n]
    frame = pd.read_csv(path)
    column = next((c for c in frame.columns if str(c).lower() == "smiles"), frame.columns[-1])
    return frame[column].astype(str).tolist()[:n]


class DrawnImages(Dataset):
    """Corpus items drawn on every access (no cache): ``(index, uint8 [3, S, S])``."""

    def __init__(self, smiles: list[str], size: int):
        self.smiles, self.size = smiles, size

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, i: int):
        from torchvision.transforms.functional import pil_to_tensor

        from tapweight_mol.render import draw

        return i, pil_to_tensor(draw(self.smiles[i], self.size))


def _rate(n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def _drain(dataset: Dataset, batch: int, workers: int, collate) -> None:
    for _ in DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate):
        pass


def run(smiles_file: Path, n: int, size: int, batch: int, workers: int) -> dict:
    """Images per second of each stage in the module docstring."""
    try:
        from tapweight_mol.corpus import SmilesList
        from tapweight_mol.data import Depictions, MolCorpus, corpus_collate
        from tapweight_mol.render import canonical, draw, quiet_rdkit
        from tapweight_mol.store import ImageStore
    except ModuleNotFoundError as err:
        raise TapweightError(f"bench data needs the mol domain ({err.name} is missing): "
                             "pip install 'tapweight[mol]'") from None
    quiet_rdkit()
    smiles = [c for c in (canonical(s) for s in read_smiles(smiles_file, n)) if c is not None]
    n = len(smiles)
    load_before = os.getloadavg()
    rows = []

    def row(stage: str, w: int, rate: float) -> None:
        rows.append({"stage": stage, "workers": w, "images": n, "images_per_s": rate})

    serial = smiles[:max(n // 4, 1)]  # one process is slow: a quarter of the molecules
    rows.append({"stage": "render, 1 process (draw only)", "workers": 1, "images": len(serial),
                 "images_per_s": _rate(len(serial), lambda: [draw(s, size) for s in serial])})
    row("load without the cache (draw)", workers,
        _rate(n, lambda: _drain(DrawnImages(smiles, size), batch, workers, corpus_collate)))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        corpus = MolCorpus(SmilesList.of(smiles), Depictions(ImageStore(cache, size)), cache)
        row("load into the cache (draw + PNG + store)", workers,
            _rate(n, lambda: _drain(corpus, batch, workers, corpus_collate)))
        for w in sorted({0, workers}):
            row("load from the cache (PNG decode)", w, _rate(n, lambda w=w: _drain(corpus, batch, w, corpus_collate)))
    return {"smiles": str(smiles_file), "image_size": size, "batch": batch,
            "torch_threads": torch.get_num_threads(), "rows": rows,
            "load_average": {"before": load_before, "after": os.getloadavg()}}
