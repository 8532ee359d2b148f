"""The image store and the streaming datasets: images drawn where they are loaded (DataLoader
workers), kept in sharded SQLite files, read back pixel for pixel; prepared corpora cached."""

import multiprocessing

import numpy as np
import pytest
import torch
from rdkit import RDConfig
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from tapweight_mol import corpus as corpus_module
from tapweight_mol import data, render, store
from tapweight_mol.corpus import SmilesList, read_corpus
from tests.mol.conftest import SMILES

CANON = [render.canonical(s) for s in SMILES]


def drawn(smiles: str, size: int) -> torch.Tensor:
    return pil_to_tensor(render.draw(smiles, size))


def test_an_image_read_back_is_the_image_that_was_drawn(tmp_path, monkeypatch):
    images = data.Depictions(store.ImageStore(tmp_path, 40))
    first = [images(s) for s in CANON]  # cold: drawn and stored
    assert len(images.store) == len(CANON)
    assert all(torch.equal(f, drawn(s, 40)) for f, s in zip(first, CANON))
    monkeypatch.setattr(data, "draw", lambda *a: pytest.fail("a stored image was drawn again"))
    again = [images(s) for s in CANON]  # warm: decoded from the store
    assert all(a.dtype == torch.uint8 and a.shape == (3, 40, 40) for a in again)
    assert all(torch.equal(a, f) for a, f in zip(again, first))


def test_the_store_is_keyed_by_smiles_and_size_in_a_few_shard_files(tmp_path):
    small, large = store.ImageStore(tmp_path, 32), store.ImageStore(tmp_path, 48)
    small.put("CCO", b"32")
    assert small.get("CCO") == b"32" and large.get("CCO") is None and small.get("CCN") is None
    small.put("CCO", b"another")  # the first image of a key stays
    assert small.get("CCO") == b"32"
    for i, s in enumerate(CANON * 20):
        small.put(f"{s}.{i}", b"x")
    assert len(small) == 1 + 20 * len(CANON)
    assert len(list((tmp_path / "32px").glob("*.sqlite"))) <= store.SHARDS


def _fill(root, smiles, size):
    images = data.Depictions(store.ImageStore(root, size))
    for s in smiles:
        images(s)


def test_concurrent_processes_fill_one_store(tmp_path):
    """Four processes draw overlapping molecules into the same store at the same time."""
    context = multiprocessing.get_context("fork")
    jobs = [context.Process(target=_fill, args=(tmp_path, CANON[i:] + CANON[:i], 32)) for i in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [job.exitcode for job in jobs] == [0] * 4
    shared = store.ImageStore(tmp_path, 32)
    assert len(shared) == len(CANON)
    images = data.Depictions(shared)
    assert all(torch.equal(images(s), drawn(s, 32)) for s in CANON)


def test_dataloader_workers_stream_the_images_the_cache_then_holds(tmp_path):
    smiles = SmilesList.of(CANON)
    cold = data.MolCorpus(smiles, data.Depictions(store.ImageStore(tmp_path, 32)), tmp_path)
    loader = DataLoader(cold, batch_size=5, num_workers=2, collate_fn=data.corpus_collate)
    streamed = torch.cat([b["image"] for b in loader])  # drawn in two worker processes
    index = torch.cat([b["index"] for b in DataLoader(cold, batch_size=5, collate_fn=data.corpus_collate)])
    assert index.tolist() == list(range(len(CANON)))
    assert len(store.ImageStore(tmp_path, 32)) == len(CANON)  # the workers filled the cache
    warm = data.MolCorpus(smiles, data.Depictions(store.ImageStore(tmp_path, 32)), tmp_path)
    cached = data.corpus_collate([warm[i] for i in range(len(warm))])["image"]
    assert torch.equal(streamed, cached)
    assert torch.equal(cached[3], drawn(CANON[3], 32))  # uint8: float on the device


def test_smiles_list_holds_strings_in_two_arrays():
    smiles = SmilesList.of(["CCO", "c1ccccc1", "N"])
    assert len(smiles) == 3 and smiles[1] == "c1ccccc1" and smiles[-1] == "N"
    assert smiles[1:] == ["c1ccccc1", "N"] and list(smiles) == ["CCO", "c1ccccc1", "N"]
    assert smiles.data.dtype == np.uint8 and smiles.offsets.tolist() == [0, 3, 11, 12]
    assert smiles.digest() == SmilesList.of(["CCO", "c1ccccc1", "N"]).digest()
    assert smiles.digest() != SmilesList.of(["CCO", "N", "c1ccccc1"]).digest()
    with pytest.raises(IndexError):
        smiles[3]


def test_a_corpus_file_is_canonicalized_once(tmp_path, monkeypatch):
    nci = f"{RDConfig.RDDataDir}/NCI/first_5K.smi"
    first = read_corpus(nci, workers=1, cache=tmp_path)
    assert not first.cached and first.invalid > 0 and len(first.smiles) + first.invalid == 4999  # lines in the file
    assert first.smiles[0] == render.canonical("CC1=CC(=O)C=CC1=O")
    monkeypatch.setattr(corpus_module, "canonicalize", lambda *a: pytest.fail("canonicalized again"))
    second = read_corpus(nci, workers=1, cache=tmp_path)
    assert second.cached and list(second.smiles) == list(first.smiles)
    assert (second.invalid, second.shown) == (first.invalid, first.shown)


class _Busy:
    """A connection that answers "database is locked" ``times`` times, as SQLite does without
    waiting while another process switches a new shard to WAL."""

    def __init__(self, times, error="database is locked"):
        self.times, self.error, self.calls = times, error, 0

    def execute(self, sql, parameters):
        self.calls += 1
        if self.calls <= self.times:
            raise store.sqlite3.OperationalError(self.error)
        return self

    def fetchone(self):
        return ("row",)


def test_a_statement_is_retried_while_the_shard_is_locked_and_other_errors_pass(monkeypatch):
    busy = _Busy(3)
    assert store._patiently(busy, "SELECT 1") == ("row",) and busy.calls == 4
    with pytest.raises(store.sqlite3.OperationalError, match="no such table"):
        store._patiently(_Busy(1, "no such table: images"), "SELECT 1")
    monkeypatch.setattr(store, "TIMEOUT", 0.05)
    with pytest.raises(store.sqlite3.OperationalError, match="locked"):
        store._patiently(_Busy(10**9), "SELECT 1")
