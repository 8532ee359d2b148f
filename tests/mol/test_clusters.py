"""MACCS k-means pseudo-labels on RDKit's shipped NCI molecules, and ImageMol's precomputed ids."""

import logging
from pathlib import Path

import numpy as np
import pytest
from rdkit import RDConfig

from tapweight_mol import clusters
from tapweight_mol.corpus import read_corpus
from tapweight_mol.data import MolCorpus
from tests.mol.conftest import IMAGEMOL

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


@pytest.fixture(scope="module")
def nci(tmp_path_factory):
    prepared = read_corpus(str(NCI), workers=1, cache=tmp_path_factory.mktemp("cache"))
    return prepared.smiles[:400], prepared.shown


def test_the_smi_file_reads_with_its_invalid_rows_counted(nci):
    smiles, bad = nci
    assert len(smiles) == 400 and all(isinstance(s, str) for s in smiles)
    assert bad and all(isinstance(row, int) for row, _ in bad)


def test_kmeans_ids_are_a_fixed_point_of_lloyds_assignment(nci, tmp_path):
    smiles, _ = nci
    ids, k = clusters.cluster_ids(smiles, 20, tmp_path)
    assert ids.shape == (400,) and k == 20 and set(np.unique(ids)) == set(range(20))
    fps = np.stack([clusters.maccs(s) for s in smiles]).astype(float)
    assert fps.shape[1] == 167
    centroids = np.stack([fps[ids == c].mean(0) for c in range(k)])
    nearest = ((fps[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == ids).mean() > 0.95  # converged k-means: points sit with their centroid
    same = (fps[:, None, :] == fps[None]).all(-1)
    assert (ids[:, None] == ids[None])[same].all()  # identical fingerprints, same cluster


def test_k_is_capped_by_the_corpus_and_logged(nci, tmp_path, caplog):
    smiles = nci[0][:50]
    with caplog.at_level(logging.INFO):
        ids, k = clusters.cluster_ids(smiles, 1000, tmp_path)
    distinct = len(np.unique(np.stack([clusters.maccs(s) for s in smiles]), axis=0))
    assert k == distinct <= 50 and ids.max() == k - 1
    assert "capped" in caplog.text


def test_cluster_ids_are_cached(nci, tmp_path, monkeypatch):
    smiles = nci[0][:60]
    first = clusters.cluster_ids(smiles, 10, tmp_path)

    def fail(*args):
        raise AssertionError("k-means ran again")

    monkeypatch.setattr(clusters, "kmeans_ids", fail)
    monkeypatch.setattr(clusters, "packed_maccs", fail)
    second = clusters.cluster_ids(smiles, 10, tmp_path)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]


def test_imagemols_csv_brings_its_own_cluster_ids(tmp_path, monkeypatch):
    prepared = read_corpus(str(IMAGEMOL / "pretrain_toy.csv"), workers=1, cache=tmp_path)
    smiles, precomputed = prepared.smiles, prepared.precomputed
    assert sorted(precomputed) == [100, 1000, 10000] and not prepared.invalid
    assert len(smiles) == len(precomputed[100]) == 1000
    monkeypatch.setattr(clusters, "kmeans_ids", lambda *a: pytest.fail("k-means was run"))
    corpus = MolCorpus(smiles, None, tmp_path, 1, precomputed)
    ids, n = corpus.clusters(1000)
    assert n == 1000 and ids.tolist() == precomputed[1000].tolist()
    assert ids[0] == 861  # first row of the file: index 1, k_1000 = 861


def test_packed_fingerprints_are_the_maccs_bits_and_workers_agree(nci, monkeypatch):
    smiles = list(nci[0][:300])
    packed = clusters.fingerprints(smiles, workers=1)
    assert packed.shape == (300, 21) and packed.dtype == np.uint8
    assert np.array_equal(clusters.unpack(packed), np.stack([clusters.maccs(s) for s in smiles]))
    monkeypatch.setattr(clusters, "PER_JOB", 50)  # 6 jobs over 2 worker processes
    assert np.array_equal(clusters.fingerprints(smiles, workers=2), packed)


def test_minibatch_kmeans_recovers_planted_clusters(monkeypatch):
    """Fingerprints drawn around 12 random prototypes (3 % of bits flipped): the mini-batch
    path, chunk by chunk, finds the prototypes' clusters (adjusted Rand index against them)."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    prototypes = rng.random((12, clusters.BITS)) < 0.3
    truth = rng.integers(0, 12, size=3000)
    bits = prototypes[truth] ^ (rng.random((3000, clusters.BITS)) < 0.03)
    packed = np.packbits(bits.astype(np.uint8), axis=1)
    monkeypatch.setattr(clusters, "FULL_KMEANS_UP_TO", 0)  # force mini-batch k-means
    monkeypatch.setattr(clusters, "CHUNK", 256)  # 11 chunks per pass
    monkeypatch.setattr(clusters, "KMeans", lambda **kw: pytest.fail("Lloyd's k-means ran"))
    ids, k = clusters.kmeans_ids(packed, 12)
    assert k == 12 and ids.shape == (3000,)
    assert adjusted_rand_score(truth, ids) > 0.95
    rows = packed.view(np.dtype((np.void, 21))).ravel()
    same = rows[:, None] == rows[None, :200]
    assert (ids[:, None] == ids[None, :200])[same].all()  # identical fingerprints, same cluster
