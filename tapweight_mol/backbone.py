"""ImageMol's backbone: torchvision's ResNet18 without its classifier (512-d features).

Inputs are RGB images in [0, 1], ``[B, 3, S, S]``; the network normalises them with the
ImageNet statistics ImageMol uses. The parameter names are torchvision's (``conv1.weight``,
``layer1.0.bn1.bias``...), so a torchvision state dict loads as is.

``--init`` accepts these checkpoint formats (torch zip or pre-zip files, keys with or
without DataParallel's ``module.`` prefix):

- ImageMol's release, as its ``pretrain.py`` saves it: ``{"arch", "state_dict"}``, the
  ResNet body under ``embedding_layer.<i>.*`` (``nn.Sequential`` of the ResNet's children),
  next to ``bn.*`` (unused by ImageMol's forward), ``jigsaw_classifier.*`` (which
  initialises ``mol.jpp``'s classifier, see objectives.py) and ``class_classifier{1,2,3}.*``
  (MG heads over ImageMol's own cluster ids, which mean nothing for our k-means: not used);
- an ImageMol fine-tuned checkpoint, as its ``finetune.py`` saves it: a torchvision ResNet18
  under ``model_state_dict`` (its task head ``fc`` not used);
- a plain torchvision ResNet18 state dict (``fc.*`` not used), optionally under ``state_dict``;
- a tapweight checkpoint: the backbone under ``backbone.*`` (a θ or w model's state dict,
  or an engine state with ``theta``), ``.pt`` or ``.safetensors``.

Loading is strict (``mol.strict_load``) and recorded in the run log (tapweight.job.loading).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from tapweight import IMAGEMOL_FINETUNED, LoadReport, container, load_into, read_weights

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: names of ResNet's children, in the order ImageMol's ``embedding_layer`` numbers them
RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                   "avgpool")
WRAPPERS = ("theta", "state_dict", "model_state_dict", "model", "w")  # where weights may nest
#: why an ImageMol release's other tensors are not loaded into the backbone
IMAGEMOL_HEADS = ("ImageMol's heads: bn is unused by its forward; class_classifier1-3 predict "
                  "clusters of ImageMol's own corpus, so the MG heads start from scratch; "
                  "jigsaw_classifier initialises mol.jpp's classifier when JPP is trained")


class ImageMolResNet18(ResNet):
    """ResNet18 (He et al., 2016) with ``fc`` removed: images → features ``[B, 512]``."""

    out_dim = 512

    def __init__(self):
        super().__init__(BasicBlock, [2, 2, 2, 2])
        self.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward((images - self.mean) / self.std)


def unwrap(checkpoint: dict) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a checkpoint, out of its wrappers and without ``module.`` prefixes, and
    notes on the way (the wrappers' top-level keys, DataParallel)."""
    state, notes = checkpoint, []
    while (inner := next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)):
        state = inner
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("module.") for k in tensors):
        notes.append("DataParallel 'module.' prefix")
    return {k.removeprefix("module."): v for k, v in tensors.items()}, notes


def backbone_state(checkpoint: dict) -> tuple[dict[str, torch.Tensor], str, str]:
    """The checkpoint's tensors with the ResNet body in torchvision names (other tensors keep
    their names, so they show as not used), the format's name, and why the rest is not used."""
    state, notes = unwrap(checkpoint)
    if any(k.startswith("embedding_layer.") for k in state):
        out = {}
        for key, value in state.items():
            if key.startswith("embedding_layer."):
                index, rest = key.removeprefix("embedding_layer.").split(".", 1)
                key = f"{RESNET_CHILDREN[int(index)]}.{rest}"
            out[key] = value
        return out, ", ".join(["ImageMol release", *notes]), IMAGEMOL_HEADS
    if any(k.startswith("backbone.") for k in state):
        return ({k.removeprefix("backbone."): v for k, v in state.items()},
                ", ".join(["tapweight", *notes]), "tapweight's objective and task heads")
    if IMAGEMOL_FINETUNED.issubset(checkpoint):
        return state, ", ".join(["ImageMol fine-tuned (finetune.py)", *notes]), "its task head"
    return state, ", ".join(["ResNet18 state dict", *notes]), "a classifier"


def load_init(model: ImageMolResNet18, init: str, strict: bool = True) -> LoadReport:
    """Load ``init`` into ``model`` (strict unless told otherwise) and log what was loaded."""
    state, fmt, dropped = backbone_state(read_weights(init))
    return load_into(model, state, target="backbone mol.resnet18", source=f"--init '{init}'",
                     format=f"{fmt}, {container(Path(init).expanduser())}", strict=strict,
                     option="mol.strict_load", dropped=dropped,
                     fix="an ImageMol, torchvision or tapweight checkpoint of a ResNet18")


def imagemol_head(init: str, name: str) -> dict[str, torch.Tensor] | None:
    """The tensors of ImageMol's head ``name`` (e.g. ``jigsaw_classifier``) in ``init``, as
    ``{"weight", "bias"}``, or None when the checkpoint has no such head."""
    state, _ = unwrap(read_weights(init))
    head = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
    return head or None


#: where ImageMol's pretrained checkpoint (ImageMol.pth.tar) is published: its README links the download
IMAGEMOL_URL = "https://github.com/HongxinXiang/ImageMol"


def build(cfg) -> ImageMolResNet18:
    """``BackboneSpec.build``: ResNet18 features, from ``cfg.init`` or random."""
    model = ImageMolResNet18()
    if cfg.init:
        load_init(model, cfg.init, cfg.options.strict_load)
    else:
        log.warning("backbone mol.resnet18 starts from random weights (no --init): this run pretrains from "
                    "scratch, it does not continue ImageMol; for the paper's setting get ImageMol.pth.tar (the "
                    "checkpoint ImageMol's README links, %s) and pass --init ImageMol.pth.tar", IMAGEMOL_URL)
    return model
