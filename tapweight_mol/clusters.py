"""Pseudo-labels for ImageMol's multi-granularity clustering (MG) objectives.

ImageMol clusters the MACCS keys (166 structural keys, RDKit's 167-bit vector) of its
corpus with k-means at k = 100, 1000 and 10000 and trains the network to predict each
molecule's cluster. We do the same with scikit-learn; k is capped by the number of
distinct fingerprints in the corpus (a warning says so), and the ids are cached on disk
keyed by the corpus and k.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import MACCSkeys
from sklearn.cluster import KMeans, MiniBatchKMeans

from tapweight_mol.render import parallel_map

log = logging.getLogger(__name__)

VERSION = "maccs-kmeans-1"  # change when the recipe changes, so old caches are not reused
MINIBATCH_ABOVE = 50_000  # corpora larger than this use MiniBatchKMeans


def maccs(smiles: str) -> np.ndarray:
    """The 167-bit MACCS fingerprint of ``smiles`` as uint8 ``[167]``."""
    fp = MACCSkeys.GenMACCSKeys(Chem.MolFromSmiles(smiles))
    bits = np.zeros((fp.GetNumBits(),), dtype=np.uint8)
    DataStructs.ConvertToNumpyArray(fp, bits)
    return bits


def kmeans_ids(fingerprints: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Cluster ids ``[N]`` and the number of clusters actually used (≤ k)."""
    distinct, inverse = np.unique(fingerprints, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if k >= len(distinct):  # each distinct fingerprint is its own cluster
        return inverse.astype(np.int64), len(distinct)
    x = distinct.astype(np.float32)
    if len(fingerprints) > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=1)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=1)
    labels = model.fit_predict(x)  # one id per distinct fingerprint
    _, labels = np.unique(labels, return_inverse=True)  # drop empty clusters: ids 0..k'-1
    ids = labels.reshape(-1)[inverse]
    return ids.astype(np.int64), int(ids.max()) + 1


def _cached(path: Path, compute) -> dict[str, np.ndarray]:
    """The arrays saved at ``path``, computing and saving them (atomically) the first time."""
    if path.exists():
        with np.load(path) as stored:
            return dict(stored)
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def cluster_ids(smiles: Sequence[str], k: int, cache: Path,
                workers: int = 0) -> tuple[np.ndarray, int]:
    """MG pseudo-labels of canonical ``smiles`` at granularity ``k``, cached under ``cache``."""
    corpus = hashlib.sha1("\n".join([VERSION, *smiles]).encode()).hexdigest()
    fps = _cached(cache / "clusters" / f"{corpus}.maccs.npz", lambda: {
        "fps": np.stack(parallel_map(maccs, list(smiles), workers, chunksize=256,
                                 inline_below=5_000))})["fps"]

    def compute():
        ids, used = kmeans_ids(fps, k)
        return {"ids": ids, "k": np.array(used)}

    stored = _cached(cache / "clusters" / f"{corpus}.k{k}.npz", compute)
    used = int(stored["k"])
    if used < k:
        log.warning("MG k=%d capped at %d clusters: the corpus (%d molecules) has only so many "
                    "distinct MACCS fingerprints; use a larger --corpus for the paper's k",
                    k, used, len(smiles))
    return stored["ids"], used
