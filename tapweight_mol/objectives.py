"""ImageMol's pretraining objectives (Zeng et al., Nat. Mach. Intell. 2022, "Methods").

Each is an ``nn.Module`` whose ``forward(backbone, batch)`` returns one unweighted loss;
``batch`` is a corpus batch ``{"image": [B, 3, S, S] in [0, 1], "index": [B]}``, or with a
GNN backbone ``{"graph": Batch, "index": [B]}`` (graphs/data.py): the MG-k objectives read
either; the others are image objectives.

- ``mg{100,1000,10000}`` multi-granularity clustering: predict the molecule's k-means
  cluster of MACCS keys (clusters.py), one linear classifier per k.
- ``jpp`` jigsaw puzzle prediction: 3×3 tiles shuffled by one of ImageMol's 100
  permutations (jigsaw.py), or left as they are (class 0) with probability 0.8 plus 1/101
  of the rest, as ImageMol's loader does; a linear classifier names the permutation (101
  classes, ImageMol's labels), initialised from ImageMol's ``jigsaw_classifier`` when
  ``--init`` is ImageMol's release.
- ``mcl`` masked-view consistency: ImageMol fills masked pixels with the image's channel
  means and pulls the features of the masked view towards those of the original (mean
  squared distance). We mask random cells of an 8×8 grid.
- ``mrd`` rationality discrimination and ``mir`` image reconstruction, which the TapWeight
  reference code left out. ImageMol trains them as a GAN; a GAN's min-max does not fit
  "one loss per objective", so here MRD is a discriminator telling original images from
  irrational ones (tiles shuffled by a non-identity permutation), and MIR decodes the
  features into a 64×64 image (ImageMol's MIR resolution) under a mean squared error.

Random draws come from torch's global generator, which the engine replays.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from tapweight import computed_once
from tapweight_mol.jigsaw import jigsaw_orders, shuffle_tiles

log = logging.getLogger(__name__)


def backbone_inputs(batch: dict):
    """What the backbone reads from a corpus batch: its graphs (GNN backbones) or its images."""
    return batch["graph"] if "graph" in batch else batch["image"]


def clean_features(backbone: nn.Module, batch: dict) -> torch.Tensor:
    """The backbone's features of the unaltered molecules ``[B, out_dim]``: the MG objectives,
    MCL and MIR all need them; within one evaluation of θ's losses the first computes them
    and the others share them (``tapweight.computed_once``)."""
    return computed_once("mol.clean_features", lambda: backbone(backbone_inputs(batch)))


class ClusterClassification(nn.Module):
    """MG-k: cross-entropy of a linear classifier over the corpus's k cluster ids."""

    def __init__(self, out_dim: int, ids: torch.Tensor, n_clusters: int):
        super().__init__()
        self.classifier = nn.Linear(out_dim, n_clusters)
        self.register_buffer("ids", ids.long(), persistent=False)  # [N_corpus] cluster of each

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        logits = self.classifier(clean_features(backbone, batch))
        return F.cross_entropy(logits, self.ids[batch["index"]])


class JigsawPuzzle(nn.Module):
    """JPP: which of the n + 1 tile orders (identity included) an image shows."""

    def __init__(self, out_dim: int, n_permutations: int = 100, unshuffled: float = 0.8):
        super().__init__()
        self.unshuffled = unshuffled
        self.register_buffer("perms", jigsaw_orders(n_permutations), persistent=False)
        self.classifier = nn.Linear(out_dim, n_permutations + 1)

    def start_from(self, head: dict[str, torch.Tensor], source: str) -> None:
        """Initialise the classifier from ImageMol's ``jigsaw_classifier`` (``{"weight",
        "bias"}``), whose labels are ours when the shapes agree; say in the log what was done."""
        ours = self.classifier.state_dict()
        if {k: v.shape for k, v in head.items()} != {k: v.shape for k, v in ours.items()}:
            log.warning("mol.jpp: ImageMol's jigsaw_classifier in %s (%s) does not fit our %d "
                        "classes (mol.jigsaw_permutations): the classifier starts from scratch",
                        source, tuple(head["weight"].shape) if "weight" in head else "no weight",
                        len(self.perms))
            return
        self.classifier.load_state_dict(head)
        log.info("mol.jpp: classifier initialised from ImageMol's jigsaw_classifier in %s "
                 "(%d classes, ImageMol's permutations and labels)", source, len(self.perms))

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        images = batch["image"]
        b, device = len(images), images.device
        order = torch.randint(len(self.perms), (b,), device=device)
        order = torch.where(torch.rand(b, device=device) < self.unshuffled, 0, order)
        logits = self.classifier(backbone(shuffle_tiles(images, self.perms[order])))
        return F.cross_entropy(logits, order)


def grid_mask(images: torch.Tensor, ratio: float, cells: int = 8) -> torch.Tensor:
    """``images`` with a random ``ratio`` of the cells of a cells×cells grid set to each
    image's channel means (ImageMol's fill value)."""
    b, _, h, w = images.shape
    chosen = torch.rand(b, 1, cells, cells, device=images.device) < ratio
    mask = F.interpolate(chosen.float(), size=(h, w), mode="nearest").bool()  # [B, 1, H, W]
    means = images.mean(dim=(2, 3), keepdim=True)  # [B, 3, 1, 1]
    return torch.where(mask, means, images)


class MaskedConsistency(nn.Module):
    """MCL: mean squared distance between the features of an image and of its masked view."""

    def __init__(self, mask_ratio: float = 0.25):
        super().__init__()
        self.mask_ratio = mask_ratio

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        masked = backbone(grid_mask(batch["image"], self.mask_ratio))
        return F.mse_loss(masked, clean_features(backbone, batch))


class RationalityDiscrimination(nn.Module):
    """MRD: tell original depictions (label 1) from tile-shuffled, irrational ones (label 0)."""

    def __init__(self, out_dim: int, n_permutations: int = 100):
        super().__init__()
        self.register_buffer("perms", jigsaw_orders(n_permutations), persistent=False)
        self.discriminator = nn.Sequential(nn.Linear(out_dim, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        images = batch["image"]
        b, device = len(images), images.device
        rational = torch.rand(b, device=device) < 0.5
        order = torch.randint(1, len(self.perms), (b,), device=device)  # never the identity
        order = torch.where(rational, 0, order)
        logits = self.discriminator(backbone(shuffle_tiles(images, self.perms[order]))).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, rational.float())


class ImageReconstruction(nn.Module):
    """MIR: decode the features into the size×size image (transposed convolutions, MSE)."""

    def __init__(self, out_dim: int, size: int = 64, width: int = 128):
        super().__init__()
        self.size, self.width = size, width
        self.project = nn.Linear(out_dim, width * 4 * 4)
        layers = []
        for _ in range(max(math.ceil(math.log2(size / 4)), 0)):  # 4 → 8 → ... ≥ size
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                       nn.BatchNorm2d(width), nn.ReLU()]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        images = batch["image"]
        z = self.project(clean_features(backbone, batch)).view(-1, self.width, 4, 4)
        out = self.decoder(z)
        if out.shape[-1] != self.size:
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear")
        target = F.interpolate(images, size=(self.size, self.size), mode="area")
        return F.mse_loss(torch.sigmoid(out), target)
