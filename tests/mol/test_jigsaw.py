"""The jigsaw permutations are ImageMol's, with ImageMol's labels; the tile shuffle."""

import numpy as np
import pytest
import torch
from torch import nn

from tapweight import TapweightError
from tapweight_mol.jigsaw import imagemol_permutations, jigsaw_orders, shuffle_tiles
from tapweight_mol.objectives import JigsawPuzzle, RationalityDiscrimination
from tests.mol.conftest import IMAGEMOL


@pytest.mark.skipif(not (IMAGEMOL / "permutations_100.npy").exists(), reason="needs ../shared/data")
def test_the_shipped_table_is_imagemols():
    theirs = np.load(IMAGEMOL / "permutations_100.npy")
    assert np.array_equal(imagemol_permutations(), theirs - theirs.min())
    assert np.array_equal(JigsawPuzzle(8).perms[1:].numpy(), theirs)  # JPP's default
    assert np.array_equal(RationalityDiscrimination(8).perms[1:].numpy(), theirs)  # and MRD's


def test_table_rows_are_distinct_orders_of_nine_tiles_after_the_identity():
    table = imagemol_permutations()
    assert table.shape == (100, 9) and table.dtype == np.int64
    assert all(sorted(p) == list(range(9)) for p in table.tolist())
    assert len({tuple(p) for p in table.tolist()}) == 100
    orders = jigsaw_orders(100)
    assert orders.tolist()[0] == list(range(9)) and tuple(range(9)) not in {tuple(p) for p in table.tolist()}
    assert torch.equal(jigsaw_orders(10), orders[:11])
    with pytest.raises(TapweightError, match="mol.jigsaw_permutations must be 1..100"):
        jigsaw_orders(101)


def imagemol_jigsaw(image: np.ndarray, order: int, permutations: np.ndarray) -> np.ndarray:
    """ImageMol's JigsawDataset.get_tile_data on a [C, H, W] array (H, W multiples of 3):
    get_tile cuts tile n at row n // 3, column n % 3; label 0 keeps the tiles, label k puts
    tiles[permutations[k - 1][t]] at position t; concatPILImage pastes position i at column
    i % 3, row i // 3."""
    c, h, w = image.shape
    th, tw = h // 3, w // 3
    tiles = [image[:, (n // 3) * th:(n // 3 + 1) * th, (n % 3) * tw:(n % 3 + 1) * tw] for n in range(9)]
    data = tiles if order == 0 else [tiles[permutations[order - 1][t]] for t in range(9)]
    out = np.empty_like(image)
    for i, tile in enumerate(data):
        out[:, (i // 3) * th:(i // 3 + 1) * th, (i % 3) * tw:(i % 3 + 1) * tw] = tile
    return out


class Oracle(nn.Module):
    """A 'backbone' that recognises which of ImageMol's 101 arrangements of ``image`` it is
    shown (one-hot features), by comparing with ImageMol's own construction."""

    def __init__(self, image: torch.Tensor):
        super().__init__()
        perms = imagemol_permutations()
        self.views = torch.stack([torch.from_numpy(imagemol_jigsaw(image.numpy(), k, perms))
                                  for k in range(101)])  # [101, C, H, W]

    def forward(self, images):
        same = (images[:, None] == self.views[None]).flatten(2).all(-1)  # [B, 101]
        assert (same.sum(1) == 1).all()
        return same.float() * 50.0


def test_jpp_labels_are_imagemols():
    torch.manual_seed(0)
    image = torch.rand(3, 9, 9)  # 3 × 3 tiles of 3 × 3 pixels, all different
    jpp = JigsawPuzzle(101, unshuffled=0.3)
    with torch.no_grad():  # an identity classifier: the loss is ~0 only if every label is right
        jpp.classifier.weight.copy_(torch.eye(101))
        jpp.classifier.bias.zero_()
    batch = {"image": image.expand(64, 3, 9, 9)}
    loss = jpp(Oracle(image), batch)
    assert loss.item() < 1e-6
    with torch.no_grad():  # the same classifier with two labels swapped is wrong: the check can fail
        jpp.classifier.weight.copy_(torch.eye(101)[[1, 0, *range(2, 101)]])
    assert jpp(Oracle(image), batch).item() > 1.0


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
