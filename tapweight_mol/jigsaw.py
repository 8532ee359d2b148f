"""Jigsaw puzzles on 3×3 tiles (Noroozi & Favaro, ECCV 2016), as ImageMol's JPP uses them.

The permutations are ImageMol's own table, ``permutations_100.npy`` from its repository
(HongxinXiang/ImageMol), shipped with this package: 100 orders of the 9 tiles, numbered
row by row. ImageMol's jigsaw loader labels an image 0 when its tiles stay in place and
k ≥ 1 when tile position t receives tile ``table[k - 1][t]``; with the same table and labels,
ImageMol's released 101-way jigsaw head is a valid start for ours.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import torch

from tapweight import TapweightError

GRID = 3
TILES = GRID * GRID
TABLE = "permutations_100.npy"


@cache
def imagemol_permutations() -> np.ndarray:
    """ImageMol's 100 jigsaw permutations, ``[100, 9]`` int64, each a reordering of 0..8."""
    with (resources.files("tapweight_mol") / TABLE).open("rb") as fh:
        table = np.load(fh)
    table = table - table.min()  # ImageMol's loader accepts tables numbered 1..9 too
    table.flags.writeable = False  # one copy, shared by every caller
    return table


def jigsaw_orders(n: int = 100) -> torch.Tensor:
    """``[n + 1, 9]``: row 0 the identity (label 0, unshuffled), row k ImageMol's permutation
    k - 1, so that label k means what it means in ImageMol."""
    table = imagemol_permutations()
    if not 1 <= n <= len(table):
        raise TapweightError(f"mol.jigsaw_permutations must be 1..{len(table)} (ImageMol's "
                             f"table has {len(table)} permutations), got {n}")
    return torch.cat([torch.arange(TILES).unsqueeze(0), torch.tensor(table[:n])])  # a copy


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
