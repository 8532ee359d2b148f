"""Jigsaw puzzles on 3×3 tiles (Noroozi & Favaro, ECCV 2016), as ImageMol's JPP uses them.

The permutation set is chosen greedily for maximal Hamming distance: starting from the
identity (ImageMol's extra "unshuffled" class 0), each next permutation of the 9! is the one
whose minimum Hamming distance to those already chosen is largest (ties: larger mean
distance, then the first in lexicographic order). Deterministic, so every run and every
machine builds the same classes.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch

GRID = 3
TILES = GRID * GRID


@lru_cache(maxsize=4)
def max_hamming_permutations(n: int = 100) -> np.ndarray:
    """``n`` permutations of the 9 tiles, ``[n, 9]`` int64, far from the identity and each other."""
    candidates = np.array(list(itertools.permutations(range(TILES))), dtype=np.int8)  # [9!, 9]
    identity = candidates[0]
    min_dist = (candidates != identity).sum(1)  # [9!] Hamming distance to the chosen set
    sum_dist = min_dist.astype(np.int64)
    chosen = []
    for _ in range(n):
        # sum_dist < 1000, so this key orders by min_dist, then sum_dist; argmax takes the
        # first (lexicographically smallest) candidate among equals
        pick = int(np.argmax(min_dist * 1000 + sum_dist))
        chosen.append(candidates[pick])
        dist = (candidates != candidates[pick]).sum(1)
        min_dist = np.minimum(min_dist, dist)
        sum_dist += dist
    return np.stack(chosen).astype(np.int64)


def hamming_matrix(perms: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of the rows of ``perms``, ``[n, n]``."""
    return (perms[:, None, :] != perms[None, :, :]).sum(-1)


def shuffle_tiles(images: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Rearrange each image's 3×3 tiles: tile position t receives tile ``perms[b, t]``.

    ``images`` [B, C, H, W]; ``perms`` [B, 9] long. When H or W is not a multiple of 3 the
    tiles cover the top-left 3·⌊H/3⌋ × 3·⌊W/3⌋ pixels and the rest stays in place.
    """
    b, c, h, w = images.shape
    th, tw = h // GRID, w // GRID
    grid = images[:, :, :GRID * th, :GRID * tw]
    tiles = grid.reshape(b, c, GRID, th, GRID, tw).permute(0, 2, 4, 1, 3, 5)  # [B, 3, 3, C, th, tw]
    tiles = tiles.reshape(b, TILES, c, th, tw)
    moved = tiles[torch.arange(b, device=images.device)[:, None], perms]  # [B, 9, C, th, tw]
    moved = moved.reshape(b, GRID, GRID, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    out = images.clone()
    out[:, :, :GRID * th, :GRID * tw] = moved.reshape(b, c, GRID * th, GRID * tw)
    return out
