"""What the step benchmark runs: shapes, synthetic data, the models, and one engine per variant.

Models are the molecular domain's (``mol.resnet18`` and the default objectives mg100,
mg1000, mg10000, jpp, mcl, taken from the plugin registry) when ``tapweight_mol`` loads;
otherwise a stand-in with the same backbone (torchvision ResNet18 without ``fc``) and three
linear cluster heads, each with its own forward, so the harness runs on its own. Images are
random pixels: a step's cost does not depend on what the images show.

The images live on the benchmark's device and a whole batch is gathered by one indexing
(``__getitems__``), so a timed step holds no input pipeline; ``python -m bench data``
measures that pipeline separately.

The ``gcn-<variant>`` variants run the same step on the graph backbone ``mol.gcn`` (Hu et
al.'s 5-layer, 300-d GCN) with the graph objectives (MG-100/1000/10000 over random cluster
ids), on `DRUGS` featurized once and held on the device: a batch is one
``Batch.from_data_list`` of them, so its collation is inside the timed step (well under a
millisecond per molecule). Their ratio is to ``gcn-plain``, and ``vs_image_plain`` to the
image backbone's ``plain``, built in the same process.
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
from tapweight.method.estimators import names
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
    **{name: {"hypergrad": name} for name in names()[1:]},
    **{f"fd-1/{n}": {"hypergrad": "fd", "hyper_fraction": 1 / n} for n in (2, 4, 8)},
    **{f"jvp-1/{n}": {"hypergrad": "jvp", "hyper_fraction": 1 / n} for n in (2, 4, 8, 16)},
    **{f"every-{k}": {"every": k} for k in (2, 4)},  # level III every k-th step: time its mean
}
#: variant -> a weighting method other than TapWeight (``method:<name>``), run with the shipped
#: hypergradient settings when it reads one: what each rule costs (docs/weightings.md)
METHODS = {f"method:{m}": m for m in ("tapweight-normalized", "olaux", "cosine", "gating", "doge", "gradnorm")}
#: the graph backbone's variants: ``gcn-`` before an image variant's name
GRAPH_VARIANTS = ("gcn-plain", "gcn-default", "gcn-fd", "gcn-fd-forward", "gcn-jvp")
VARIANTS = ("plain", *SETTINGS, *METHODS, "betty", *GRAPH_VARIANTS)
#: the graph workload's molecules (drugs of 8 to 33 heavy atoms, 20 on average; BBBP's mean is 24)
DRUGS = (
    "CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1", "CN1CCC[C@H]1c1cccnc1", "CC(C)NCC(O)c1ccc(O)c(O)c1",
    "COc1ccc2[nH]cc(CCNC(C)=O)c2c1", "CN(C)CCCN1c2ccccc2CCc2ccccc21",
    "OC(=O)CCC[C@H](N)C(=O)O", "Clc1ccc(cc1)C(c1ccccc1)N1CCN(CC1)CCOCC(=O)O",
    "CC1=C(C(=O)OC(C)C)C(c2cccc(c2)[N+](=O)[O-])C(C(=O)OC)=C(C)N1",
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21", "O=C(O)c1ccccc1O", "NCCc1ccc(O)c(O)c1",
    "CC12CCC3C(CCC4=CC(=O)CCC34C)C1CCC2O",
    "CC(C)(C)NCC(O)COc1cccc2c1CC(O)C(O)C2",
)


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


class SyntheticGraphs(Dataset):
    """``n`` molecular graphs of `DRUGS` (in turn) on ``device``, a batch at a time:
    ``{"graph": Batch, "index": [B]}`` without labels, else ``(Batch, labels [B, 1])``."""

    def __init__(self, n: int, device: torch.device, seed: int, labelled: bool = False):
        from tapweight_mol.graphs.featurize import smiles_to_graph

        g = torch.Generator().manual_seed(seed)
        self.graphs = [smiles_to_graph(DRUGS[i % len(DRUGS)]).to(device) for i in range(n)]
        self.labels = (torch.rand(n, 1, generator=g) < 0.5).float().to(device) if labelled else None
        self.device, self.seed = device, seed

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]):
        from tapweight_mol.graphs.pyg import Batch

        graphs = Batch.from_data_list([self.graphs[i] for i in indices])
        if self.labels is None:
            return {"graph": graphs, "index": torch.as_tensor(indices, device=self.device)}
        return graphs, self.labels[torch.as_tensor(indices, device=self.device)]

    clusters = SyntheticImages.clusters


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


def _graph_models(cfg: RunConfig, corpus: SyntheticGraphs):
    """mol.gcn at Hu et al.'s size and the graph objectives, from the plugin registry."""
    from tapweight_mol.options import MolOptions

    registry = build_registry()
    cfg.options, cfg.backbone = MolOptions(), "mol.gcn"
    spec = registry.get("backbones", "mol.gcn", "mol")
    backbone = spec.build(cfg, DomainData(corpus, whole_batch))
    names = list(spec.objectives)
    objectives = [registry.get("objectives", n, "mol").build(backbone, corpus, cfg) for n in names]
    return backbone, objectives, names


class GraphWorkload:
    """The graph half of a `Workload`: molecules, mol.gcn and its objectives."""

    def __init__(self, shape: Shape, device: torch.device, cfg: RunConfig, seed: int):
        self.corpus = SyntheticGraphs(2 * shape.pretrain_batch, device, seed)
        self.train = SyntheticGraphs(2 * shape.finetune_batch, device, seed + 1, labelled=True)
        self.val = SyntheticGraphs(2 * shape.reweight_batch, device, seed + 2, labelled=True)
        torch.manual_seed(seed)
        backbone, objectives, names = _graph_models(copy.deepcopy(cfg), self.corpus)
        self.theta = PretrainModel(backbone, objectives, names)
        self.w = TaskModel(copy.deepcopy(backbone), nn.Linear(backbone.out_dim, 1))
        self.source = f"tapweight_mol: mol.gcn + {', '.join(names)}, {len(DRUGS)} drugs"


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
        self.seed, self._graph = seed, None

    def graph(self) -> GraphWorkload:
        """The graph workload, built the first time a ``gcn-`` variant asks for it."""
        if self._graph is None:
            self._graph = GraphWorkload(self.shape, self.device, self.cfg, self.seed)
        return self._graph

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
        data = self.graph() if variant.startswith("gcn-") else self
        variant = variant.removeprefix("gcn-")
        cfg, s, seed = self.config(variant), self.shape, self.cfg.seed
        theta, w = copy.deepcopy(data.theta).train(), copy.deepcopy(data.w).train()
        corpus = BatchStream(data.corpus, cfg.pretrain.batch_size, whole_batch, seed)
        train = BatchStream(data.train, s.finetune_batch, whole_batch, seed + 1)
        val = BatchStream(data.val, s.reweight_batch, whole_batch, seed + 2)
        if variant == "betty":
            from tapweight.method.betty import BettyEngine

            return BettyEngine(theta, w, corpus, train, val, cfg, "bce", self.device)
        rule = weightings.build(build_registry(), cfg) if variant in METHODS else None
        learn = rule.learns if rule else variant != "plain"
        return Engine(theta, w, corpus, train if learn else None, val if learn else None, cfg, "bce",
                      self.device, learn_weights=learn, weighting=rule)
