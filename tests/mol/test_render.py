"""Rendering SMILES to images, and the on-disk cache that keeps them."""

import numpy as np
import pytest
from PIL import Image

from tapweight_mol import render
from tests.mol.conftest import SMILES


def test_images_are_rgb_depictions_of_the_requested_size(tmp_path):
    paths, drawn = render.render([render.canonical(s) for s in SMILES[:3]], 48, tmp_path, workers=1)
    assert drawn == 3
    for path in paths:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (48, 48, 3)
        assert (pixels > 250).all(-1).mean() > 0.5  # mostly white canvas ...
        assert (pixels < 200).all(-1).sum() > 50  # ... with grey bonds drawn on it


def test_cache_is_keyed_by_canonical_smiles_and_size(tmp_path):
    assert render.canonical("OCC") == render.canonical("C(O)C") == "CCO"
    assert render.image_path(tmp_path, "CCO", 64) != render.image_path(tmp_path, "CCO", 32)
    assert render.canonical("not a molecule") is None
    assert render.canonical("") is None


def test_a_second_call_reads_the_cache_and_draws_nothing(tmp_path, monkeypatch):
    smiles = [render.canonical(s) for s in SMILES[:4]]
    first, drawn = render.render(smiles, 32, tmp_path, workers=1)
    assert drawn == 4

    def fail(*args):
        raise AssertionError("re-rendered a cached image")

    monkeypatch.setattr(render, "_draw_and_save", fail)
    second, drawn = render.render(smiles, 32, tmp_path, workers=1)
    assert drawn == 0 and second == first


def test_worker_processes_draw_the_same_images_as_the_main_process(tmp_path):
    smiles = [render.canonical(s) for s in SMILES] * 6  # 72 ≥ the inline threshold
    pooled = render.parallel_map(render.canonical, smiles, workers=2, chunksize=8)
    assert pooled == smiles
    paths, drawn = render.render(sorted(set(smiles)), 32, tmp_path / "a", workers=2)
    assert drawn == len(set(smiles))
    inline = render.draw(sorted(set(smiles))[0], 32)
    assert np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(inline))


@pytest.mark.parametrize("size", [224, 300])
def test_large_sizes_are_drawn_directly(size):
    assert render.draw("c1ccccc1", size).size == (size, size)
