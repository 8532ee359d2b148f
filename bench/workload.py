"""What the step benchmark runs: shapes, synthetic data, the models, and one engine per variant.

Models are the molecular domain's (``mol.resnet18`` and the default objectives mg100,
mg1000, mg10000, jpp, mcl, taken from the plugin registry) when ``tapweight_mol`` loads;
otherwise a stand-in with the same backbone (torchvision ResNet18 without ``fc``) and three
linear cluster heads, each with its own forward, so the harness runs on its own. Images are
random pixels: a step's cost does not depend on what the images show.

The images live on the benchmark's device and a whole batch is gathered by one indexing
(``__getitems__``), so a timed step holds no input pipeline; ``python -m bench data``
measures that pipeline separately.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.method import weightings
from tapweight.method.batches import BatchStream
from tapweight.method.engine import Engine
from tapweight.method.estimators import ESTIMATORS
from tapweight.method.models import PretrainModel, TaskModel
from tapweight.plugin.manager import build_registry
from tapweight.plugin.specs import DomainData

#: variant -> the reweight keys of its TapWeight step (RunConfig's defaults for the rest):
#: ``default`` is the shipped setting (``auto``); one variant per registered estimator
#: (tapweight/method/estimators.py: ``fd`` the central difference, Betty's darts estimator at
#: its radius, ``fd-forward`` the one-sided difference reusing level I's losses, ``jvp`` the
#: exact directional derivative, ``neumann``, ``cg``); ``fd-1/N`` and ``jvp-1/N`` take theirs on
#: the first 1/N of each level I batch. ``plain`` (level I only, uniform λ) is the baseline and
#: ``betty`` the reference code's engine. A new variant is one more entry.
SETTINGS = {
    "default": {},
    **{name: {"hypergrad": name} for name in ESTIMATORS},
    **{f"fd-1/{n}": {"hypergrad": "fd", "hyper_fraction": 1 / n} for n in (2, 4, 8)},
    **{f"jvp-1/{n}": {"hypergrad": "jvp", "hyper_fraction": 1 / n} for n in (2, 4, 8, 16)},
    **{f"every-{k}": {"every": k} for k in (2, 4)},  # level III every k-th step: time its mean
}
#: variant -> a weighting method other than TapWeight (``method:<name>``), run with the shipped
#: hypergradient settings when it reads one: what each rule costs (docs/weightings.md)
METHODS = {f"method:{m}": m for m in ("tapweight-normalized", "olaux", "cosine", "gating", "doge", "gradnorm")}
VARIANTS = ("plain", *SETTINGS, *METHODS, "betty")


@dataclass(frozen=True)
class Shape:
    """Image side and the batch sizes of levels I, II, III."""

    name: str
    image_size: int
    pretrain_batch: int
    finetune_batch: int
    reweight_batch: int


SHAPES = {
    # ImageMol in the paper's TapWeight setting (TMLR 2025, §5): 224 px, batch 1024 / 64 / 64
    "paper": Shape("paper", 224, 1024, 64, 64),
    # 2 CPU cores in about a minute for the whole benchmark (the domain's `cpu` preset sizes)
    "cpu": Shape("cpu", 64, 32, 16, 16),
    # the paper's 16 : 1 : 1 batch ratio at the CPU image size: levels II and III weigh what
    # they weigh at the paper shape, so the step ratio approaches the paper shape's
    "ratio": Shape("ratio", 64, 256, 16, 16),
    # the harness's own test: seconds
    "tiny": Shape("tiny", 32, 4, 4, 4),
}


class SyntheticImages(Dataset):
    """``n`` random uint8 images ``[3, S, S]`` on ``device``, fetched a batch at a time.

    Without labels a batch is a corpus batch ``{"image": [B, 3, S, S] in [0, 1], "index": [B]}``
    (what tapweight_mol's objectives take); with labels it is ``(images, labels [B, 1])``.
    Random cluster ids stand in for the MG objectives' k-means clusters.
    """

    def __init__(self, n: int, size: int, device: torch.device, seed: int, labelled: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).to(device)
        self.labels = (torch.rand(n, 1, generator=g) < 0.5).float().to(device) if labelled else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, device=self.images.device)
        images = self.images[index].float().div_(255)  # [B, 3, S, S]
        if self.labels is None:
            return {"image": images, "index": index}
        return images, self.labels[index]

    def clusters(self, k: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed + k)
        return torch.randint(0, k, (len(self),), generator=g), k


def whole_batch(batch):
    """The collate function: ``__getitems__`` already returns a batch."""
    return batch


class ClusterHead(nn.Module):
    """Stand-in objective: cross-entropy of a linear classifier over random cluster ids."""

    def __init__(self, out_dim: int, ids: torch.Tensor, k: int):
        super().__init__()
        self.classifier = nn.Linear(out_dim, k)
        self.register_buffer("ids", ids, persistent=False)

    def forward(self, backbone, batch):
        logits = self.classifier(backbone(batch["image"]))
        return nn.functional.cross_entropy(logits, self.ids[batch["index"]])


def _mol_models(cfg: RunConfig, data: DomainData, size: int):
    """mol.resnet18 and the mol domain's default objectives, or None if the domain is unavailable."""
    from tapweight.plugin import manager as plugins

    registry = plugins.build_registry()
    try:
        domain = registry.require_domain("mol")
    except TapweightError:
        return None
    from tapweight_mol.options import MolOptions

    cfg.options = MolOptions(image_size=size, mir_size=min(64, size))
    backbone = registry.get("backbones", domain.backbone, "mol").build(cfg, data)
    names = list(domain.objectives)
    objectives = [registry.get("objectives", n, "mol").build(backbone, data.corpus, cfg) for n in names]
    return backbone, objectives, names, f"tapweight_mol: {domain.backbone} + {', '.join(names)}"


class SmallConv(nn.Sequential):
    """A two-layer conv net (with batch norm) for the harness's own test: images → ``[B, 16]``."""

    out_dim = 16

    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _stand_in_models(corpus: SyntheticImages, small: bool):
    """torchvision ResNet18 features (or SmallConv) and three linear cluster heads."""
    if small:
        backbone, ks, what = SmallConv(), (10, 20, 30), "toy: small conv net"
    else:
        try:
            from torchvision.models import resnet18
        except ModuleNotFoundError:
            raise TapweightError("the benchmark needs torchvision: pip install 'tapweight[mol]'") from None
        backbone, ks, what = resnet18(), (100, 1000, 10000), "stand-in: torchvision resnet18"
        backbone.fc = nn.Identity()
        backbone.out_dim = 512
    objectives = [ClusterHead(backbone.out_dim, *corpus.clusters(k)) for k in ks]
    return backbone, objectives, [f"bench.mg{k}" for k in ks], f"{what} + 3 linear cluster heads"


class Workload:
    """The data and initial models of one benchmark; ``build(variant)`` gives a fresh engine."""

    def __init__(self, shape: Shape, device: torch.device, amp: str = "no", accumulate: int = 1,
                 models: str = "auto", seed: int = 0):
        """``models``: ``mol`` (tapweight_mol, required), ``stand-in`` (torchvision ResNet18),
        ``toy`` (a small conv net, for tests) or ``auto`` (mol if it loads, else stand-in)."""
        if shape.pretrain_batch % accumulate:
            raise TapweightError(f"--accumulate {accumulate} does not divide the level I batch "
                                 f"{shape.pretrain_batch}")
        self.shape, self.device = shape, device
        size = shape.image_size
        self.corpus = SyntheticImages(2 * shape.pretrain_batch, size, device, seed)
        self.train = SyntheticImages(2 * shape.finetune_batch, size, device, seed + 1, labelled=True)
        self.val = SyntheticImages(2 * shape.reweight_batch, size, device, seed + 2, labelled=True)

        cfg = RunConfig(steps=10**6, seed=seed, amp=amp)
        cfg.pretrain.batch_size = shape.pretrain_batch // accumulate
        cfg.pretrain.accumulate = accumulate
        cfg.finetune.batch_size, cfg.reweight.batch_size = shape.finetune_batch, shape.reweight_batch
        torch.manual_seed(seed)
        data = DomainData(self.corpus, whole_batch, self.train, self.val, self.val, whole_batch)
        built = _mol_models(cfg, data, size) if models in ("auto", "mol") else None
        if built is None and models == "mol":
            raise TapweightError("--models mol: the mol domain is unavailable: pip install 'tapweight[mol]'")
        backbone, objectives, names, self.source = built or _stand_in_models(self.corpus, models == "toy")
        self.cfg = cfg
        # master copies on the CPU; every variant starts from the same weights
        self.theta = PretrainModel(backbone, objectives, names)
        self.w = TaskModel(copy.deepcopy(backbone), nn.Linear(backbone.out_dim, 1))

    def config(self, variant: str) -> RunConfig:
        cfg = copy.deepcopy(self.cfg)
        cfg.method = METHODS.get(variant) or ("uniform" if variant == "plain" else "tapweight")
        for key, value in SETTINGS.get(variant, {}).items():
            setattr(cfg.reweight, key, value)
        return cfg

    def build(self, variant: str):
        """A fresh engine for ``variant`` (an object with ``step()``), models on the device."""
        if variant not in VARIANTS:
            raise TapweightError(f"unknown variant '{variant}' (variants: {', '.join(VARIANTS)})")
        cfg, s, seed = self.config(variant), self.shape, self.cfg.seed
        theta, w = copy.deepcopy(self.theta).train(), copy.deepcopy(self.w).train()
        corpus = BatchStream(self.corpus, cfg.pretrain.batch_size, whole_batch, seed)
        train = BatchStream(self.train, s.finetune_batch, whole_batch, seed + 1)
        val = BatchStream(self.val, s.reweight_batch, whole_batch, seed + 2)
        if variant == "betty":
            from tapweight.method.betty import BettyEngine

            return BettyEngine(theta, w, corpus, train, val, cfg, "bce", self.device)
        rule = weightings.build(build_registry(), cfg) if variant in METHODS else None
        learn = rule.learns if rule else variant != "plain"
        return Engine(theta, w, corpus, train if learn else None, val if learn else None, cfg, "bce",
                      self.device, learn_weights=learn, weighting=rule)
