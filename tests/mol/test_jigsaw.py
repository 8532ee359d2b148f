"""The jigsaw permutation set and the tile shuffle."""

import numpy as np
import torch

from tapweight_mol.jigsaw import hamming_matrix, max_hamming_permutations, shuffle_tiles
from tests.mol.conftest import IMAGEMOL


def _pairwise(perms):
    d = hamming_matrix(perms)
    upper = d[np.triu_indices(len(perms), 1)]
    return upper.min(), upper.mean()


def test_permutations_are_distinct_valid_and_deterministic():
    perms = max_hamming_permutations(100)
    assert perms.shape == (100, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    max_hamming_permutations.cache_clear()
    assert np.array_equal(perms, max_hamming_permutations(100))


def test_permutations_are_as_far_apart_as_imagemols_own_set():
    ours = max_hamming_permutations(100)
    theirs = np.load(IMAGEMOL / "permutations_100.npy")
    theirs = theirs - theirs.min()  # ImageMol stores 0..8 (older sets 1..9)
    our_min, our_mean = _pairwise(ours)
    their_min, their_mean = _pairwise(theirs)
    assert our_min >= their_min  # ImageMol's: 2, ours: 6
    assert our_mean >= their_mean - 0.01  # both ≈ 8.08 of at most 9
    identity = np.arange(9)
    assert (ours != identity).sum(1).min() >= 6  # far from "unshuffled" (class 0) too


def test_shuffle_tiles_moves_each_tile_where_the_permutation_says():
    images = torch.arange(2 * 3 * 7 * 7, dtype=torch.float32).reshape(2, 3, 7, 7)  # 7 = 3·2 + 1
    perms = torch.tensor([[8, 7, 6, 5, 4, 3, 2, 1, 0], list(range(9))])
    out = shuffle_tiles(images, perms)
    assert torch.equal(out[1], images[1])  # identity
    for t in range(9):  # position t holds tile perms[0, t], cut independently here
        src = perms[0, t].item()
        r, c, sr, sc = t // 3, t % 3, src // 3, src % 3
        assert torch.equal(out[0, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2],
                           images[0, :, 2 * sr:2 * sr + 2, 2 * sc:2 * sc + 2])
    assert torch.equal(out[0, :, 6, :], images[0, :, 6, :])  # the remainder row stays
    inverse = torch.argsort(perms)
    assert torch.equal(shuffle_tiles(out, inverse), images)
