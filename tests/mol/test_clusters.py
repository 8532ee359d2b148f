"""MACCS k-means pseudo-labels on RDKit's shipped NCI molecules, and ImageMol's precomputed ids."""

import logging
from pathlib import Path

import numpy as np
import pytest
from rdkit import RDConfig

from tapweight_mol import clusters
from tapweight_mol.data import MolCorpus, read_corpus
from tests.mol.conftest import IMAGEMOL

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


@pytest.fixture(scope="module")
def nci():
    smiles, _, bad = read_corpus(str(NCI), workers=1)
    return smiles[:400], bad


def test_the_smi_file_reads_with_its_invalid_rows_counted(nci):
    smiles, bad = nci
    assert len(smiles) == 400 and all(isinstance(s, str) for s in smiles)
    assert all(isinstance(row, int) for row, _ in bad)


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


def test_k_is_capped_by_the_corpus_with_a_warning(nci, tmp_path, caplog):
    smiles = nci[0][:50]
    with caplog.at_level(logging.WARNING):
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
    monkeypatch.setattr(clusters, "maccs", fail)
    second = clusters.cluster_ids(smiles, 10, tmp_path)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]


def test_imagemols_csv_brings_its_own_cluster_ids(tmp_path, monkeypatch):
    smiles, precomputed, bad = read_corpus(str(IMAGEMOL / "pretrain_toy.csv"), workers=1)
    assert sorted(precomputed) == [100, 1000, 10000] and not bad
    assert len(smiles) == len(precomputed[100]) == 1000
    monkeypatch.setattr(clusters, "kmeans_ids", lambda *a: pytest.fail("k-means was run"))
    corpus = MolCorpus(smiles, [tmp_path] * len(smiles), tmp_path, 1, precomputed)
    ids, n = corpus.clusters(1000)
    assert n == 1000 and ids.tolist() == precomputed[1000].tolist()
    assert ids[0] == 861  # first row of the file: index 1, k_1000 = 861
