"""Pseudo-labels for ImageMol's multi-granularity clustering (MG) objectives.

ImageMol clusters the MACCS keys (166 structural keys, RDKit's 167-bit vector) of its
corpus with k-means at k = 100, 1000 and 10000 and trains the network to predict each
molecule's cluster. We do the same with scikit-learn, once per corpus and k: the
fingerprints (computed in parallel, kept packed: 21 bytes a molecule) and the ids are cached
on disk keyed by the corpus's SMILES and k. k is capped by the number of distinct
fingerprints (a warning says so); identical fingerprints always share a cluster.

Up to ``FULL_KMEANS_UP_TO`` distinct fingerprints, Lloyd's k-means (``KMeans``); above,
mini-batch k-means (Sculley, 2010; ``MiniBatchKMeans.partial_fit``) over chunks unpacked to
float32 one at a time, so memory stays at the packed fingerprints plus one chunk whatever
the corpus: ``EPOCHS`` passes, k-means++ on the first chunk. A million molecules at k =
10000 take minutes on two cores (docs/benchmarks.md, "Corpus scale").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import MACCSkeys
from sklearn.cluster import KMeans, MiniBatchKMeans

from tapweight_mol.corpus import SmilesList
from tapweight_mol.render import parallel_map

log = logging.getLogger(__name__)

VERSION = "maccs-kmeans-2"  # change when the recipe changes, so old caches are not reused
BITS = 167  # RDKit's MACCS vector (bit 0 unused)
FULL_KMEANS_UP_TO = 50_000  # distinct fingerprints; more: mini-batch k-means
CHUNK = 8192  # fingerprints per mini-batch (at least 3k: k-means++ starts from the first)
EPOCHS = 2  # mini-batch passes over the distinct fingerprints
PER_JOB = 2048  # molecules per fingerprint job of a worker process


def maccs(smiles: str) -> np.ndarray:
    """The 167-bit MACCS fingerprint of ``smiles`` as uint8 ``[167]``."""
    fp = MACCSkeys.GenMACCSKeys(Chem.MolFromSmiles(smiles))
    bits = np.zeros((fp.GetNumBits(),), dtype=np.uint8)
    DataStructs.ConvertToNumpyArray(fp, bits)
    return bits


def packed_maccs(smiles: list[str]) -> np.ndarray:
    """MACCS fingerprints of ``smiles``, 8 bits a byte: uint8 ``[n, 21]``."""
    return np.packbits(np.stack([maccs(s) for s in smiles]), axis=1)


def unpack(packed: np.ndarray) -> np.ndarray:
    """Packed fingerprints ``[n, 21]`` as float32 ``[n, 167]`` of 0s and 1s."""
    return np.unpackbits(packed, axis=1, count=BITS).astype(np.float32)


def fingerprints(smiles: Sequence[str], workers: int = 0) -> np.ndarray:
    """Packed MACCS fingerprints ``[N, 21]`` of canonical ``smiles``, in worker processes."""
    jobs = [list(smiles[i:i + PER_JOB]) for i in range(0, len(smiles), PER_JOB)]
    return np.concatenate(parallel_map(packed_maccs, jobs, workers, chunksize=1, inline_below=3))


def _minibatch_labels(distinct: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Mini-batch k-means of packed ``distinct`` fingerprints: a cluster id for each."""
    n, chunk = len(distinct), max(CHUNK, 3 * k)
    model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=chunk,
                            compute_labels=False)
    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        for rows in np.array_split(rng.permutation(n), max(n // chunk, 1)):  # each ≥ chunk rows
            model.partial_fit(unpack(distinct[np.sort(rows)]))
    return np.concatenate([model.predict(unpack(distinct[i:i + chunk])) for i in range(0, n, chunk)])


def kmeans_ids(packed: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Cluster ids ``[N]`` of packed fingerprints ``[N, 21]``, and the number of clusters
    actually used (≤ k)."""
    rows = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    distinct, inverse = np.unique(rows, return_inverse=True)
    distinct = distinct.view(np.uint8).reshape(-1, packed.shape[1])
    inverse = inverse.reshape(-1)
    if k >= len(distinct):  # each distinct fingerprint is its own cluster
        return inverse.astype(np.int64), len(distinct)
    if len(distinct) <= FULL_KMEANS_UP_TO:
        labels = KMeans(n_clusters=k, random_state=seed, n_init=1).fit_predict(unpack(distinct))
    else:
        labels = _minibatch_labels(distinct, k, seed)
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
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def _timed(what: str, compute):
    start = time.perf_counter()
    result = compute()
    log.info("%s in %.1f s (cached for later runs)", what, time.perf_counter() - start)
    return result


def corpus_stem(smiles: Sequence[str], cache: Path) -> tuple[SmilesList, Path]:
    """``smiles`` as a `SmilesList` and the cache path stem of its fingerprints and ids."""
    listed = smiles if isinstance(smiles, SmilesList) else SmilesList.of(smiles)
    return listed, cache / "clusters" / f"{VERSION}-{listed.digest()}"


def cached_fingerprints(smiles: Sequence[str], cache: Path, workers: int = 0) -> np.ndarray:
    """Packed MACCS fingerprints ``[N, 21]`` of canonical ``smiles``, computed once per corpus."""
    listed, stem = corpus_stem(smiles, cache)
    return _cached(stem.with_name(f"{stem.name}.maccs.npz"), lambda: _timed(
        f"MACCS fingerprints of {len(listed)} molecules", lambda: {"fps": fingerprints(listed, workers)}))["fps"]


def cluster_ids(smiles: Sequence[str], k: int, cache: Path,
                workers: int = 0) -> tuple[np.ndarray, int]:
    """MG pseudo-labels of canonical ``smiles`` at granularity ``k``, cached under ``cache``."""
    listed, stem = corpus_stem(smiles, cache)

    def compute() -> dict[str, np.ndarray]:
        packed = cached_fingerprints(listed, cache, workers)
        ids, used = _timed(f"MG k={k}: k-means of {len(listed)} fingerprints", lambda: kmeans_ids(packed, k))
        return {"ids": ids, "k": np.array(used)}

    stored = _cached(stem.with_name(f"{stem.name}.k{k}.npz"), compute)
    used = int(stored["k"])
    if used < k:  # the objective still holds (coarser clusters): a note in the log, no warning
        log.info("MG k=%d capped at %d clusters: the corpus (%d molecules) has only so many "
                 "distinct MACCS fingerprints; a larger --corpus gives the paper's k",
                 k, used, len(listed))
    return stored["ids"], used
