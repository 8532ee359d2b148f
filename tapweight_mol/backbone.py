"""ImageMol's backbone: torchvision's ResNet18 without its classifier (512-d features).

Inputs are RGB images in [0, 1], ``[B, 3, S, S]``; the network normalises them with the
ImageNet statistics ImageMol uses. The parameter names are torchvision's (``conv1.weight``,
``layer1.0.bn1.bias``...), so a torchvision state dict loads as is.

``--init`` accepts three checkpoint formats:

- ImageMol's release: ``{"arch", "state_dict"}``, the ResNet body under
  ``embedding_layer.<i>.*`` (``nn.Sequential`` of the ResNet's children), next to
  ``jigsaw_classifier.*`` and ``class_classifier{1,2,3}.*``, which are not loaded;
- a plain torchvision ResNet18 state dict (``fc.*`` ignored), optionally under
  ``state_dict``;
- a tapweight checkpoint: the backbone under ``backbone.*`` (a θ or w model's state dict,
  or an engine state with ``theta``), ``.pt`` or ``.safetensors``.
Keys may carry DataParallel's ``module.`` prefix.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from tapweight import TapweightError, read_weights

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: names of ResNet's children, in the order ImageMol's ``embedding_layer`` numbers them
RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                   "avgpool")
WRAPPERS = ("theta", "state_dict", "model", "w")  # where a checkpoint may nest its weights


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


def backbone_state(checkpoint: dict) -> tuple[dict[str, torch.Tensor], str]:
    """The ResNet body's state dict in torchvision names, and the format it came in."""
    state = checkpoint
    while (inner := next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)):
        state = inner
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("embedding_layer.") for k in state):
        out = {}
        for key, value in state.items():
            if key.startswith("embedding_layer."):
                index, rest = key.removeprefix("embedding_layer.").split(".", 1)
                out[f"{RESNET_CHILDREN[int(index)]}.{rest}"] = value
        return out, "ImageMol"
    if any(k.startswith("backbone.") for k in state):
        return {k.removeprefix("backbone."): v for k, v in state.items()
                if k.startswith("backbone.")}, "tapweight"
    return {k: v for k, v in state.items() if not k.startswith("fc.")}, "torchvision"


def load_init(model: ImageMolResNet18, init: str) -> str:
    """Load ``init`` into ``model``; returns the checkpoint format's name."""
    state, fmt = backbone_state(read_weights(init))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        problems = [f"{name}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                    for name, keys in (("missing", missing), ("unexpected", extra),
                                       ("wrong shape", wrong)) if keys]
        raise TapweightError(f"--init {init} ({fmt} format) does not fit ResNet18: "
                             f"{'; '.join(problems)}. Accepted: ImageMol, torchvision, tapweight")
    model.load_state_dict(state)
    return fmt


def build(cfg) -> ImageMolResNet18:
    """``BackboneSpec.build``: ResNet18 features, from ``cfg.init`` or random."""
    model = ImageMolResNet18()
    if cfg.init:
        fmt = load_init(model, cfg.init)
        log.info("backbone: loaded %s checkpoint %s", fmt, cfg.init)
    else:
        log.warning("backbone mol.resnet18 starts from random weights (no --init); pass "
                    "--init with ImageMol's pretrained checkpoint for the paper's setting")
    return model
