"""Drawing SMILES to images, and canonical SMILES (the image store's keys: test_store.py)."""

import numpy as np
import pytest

from tapweight_mol import render
from tests.mol.conftest import SMILES


def test_images_are_rgb_depictions_of_the_requested_size():
    for smiles in SMILES[:3]:
        pixels = np.asarray(render.draw(render.canonical(smiles), 48))
        assert pixels.shape == (48, 48, 3)
        assert (pixels > 250).all(-1).mean() > 0.5  # mostly white canvas ...
        assert (pixels < 200).all(-1).sum() > 50  # ... with grey bonds drawn on it


def test_canonical_smiles_name_one_molecule_one_way():
    assert render.canonical("OCC") == render.canonical("C(O)C") == "CCO"
    assert render.canonical("not a molecule") is None
    assert render.canonical("") is None


def test_worker_processes_compute_what_the_main_process_does():
    smiles = SMILES * 6  # 72 ≥ the inline threshold
    pooled = render.parallel_map(render.canonical, smiles, workers=2, chunksize=8)
    assert pooled == [render.canonical(s) for s in smiles]


@pytest.mark.parametrize("size", [224, 300])
def test_large_sizes_are_drawn_directly(size):
    assert render.draw("c1ccccc1", size).size == (size, size)
