"""ImageMol's pretraining objectives: finite losses, gradients into the backbone, the draws."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from tapweight import Split, Table
from tapweight.method.batches import to_device
from tapweight.method.models import PretrainModel
from tapweight.plugin.manager import build_registry
from tapweight_mol.backbone import ImageMolResNet18
from tapweight_mol.data import build_data
from tapweight_mol.jigsaw import shuffle_tiles
from tapweight_mol.moleculenet import Molecules
from tapweight_mol.objectives import JigsawPuzzle, RationalityDiscrimination
from tests.mol.conftest import BBBP_TASK, SMILES

NAMES = ["mol.mg100", "mol.mg1000", "mol.mg10000", "mol.jpp", "mol.mcl", "mol.mrd", "mol.mir"]


@pytest.fixture(scope="module")
def registry():
    return build_registry()


@pytest.fixture
def corpus_batch(mol_config):
    cfg = mol_config()
    table = Table(Molecules(SMILES), np.zeros((len(SMILES), 1), np.float32), ("y",))
    n = len(SMILES)
    data = build_data(cfg, table, Split(np.arange(n - 2), np.array([n - 2]), np.array([n - 1])), BBBP_TASK)
    batch = data.corpus_collate([data.corpus[i] for i in range(len(data.corpus))])
    return cfg, data.corpus, to_device(batch, torch.device("cpu"))  # as the engine hands it over


@pytest.mark.parametrize("name", NAMES)
def test_objective_gives_a_finite_scalar_whose_gradient_reaches_the_backbone(
        name, registry, corpus_batch):
    cfg, corpus, batch = corpus_batch
    torch.manual_seed(0)
    backbone = ImageMolResNet18()
    objective = registry.get("objectives", name).build(backbone, corpus, cfg)
    loss = objective(backbone, batch)
    assert loss.shape == () and math.isfinite(float(loss.detach()))
    loss.backward()
    grad = backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    own = list(objective.parameters())
    assert all(p.grad is not None for p in own)  # its head, if any, belongs to θ


def test_mg_classes_come_from_the_corpus_clusters(registry, corpus_batch):
    cfg, corpus, _ = corpus_batch
    mg = registry.get("objectives", "mol.mg100").build(ImageMolResNet18(), corpus, cfg)
    assert mg.classifier.out_features == len(set(corpus.smiles))  # k = 100 capped at 10
    jpp = registry.get("objectives", "mol.jpp").build(ImageMolResNet18(), corpus, cfg)
    assert jpp.classifier.out_features == 101


def test_shared_clean_features_match_separate_evaluation(registry, corpus_batch):
    """The loss vector of θ equals each objective evaluated alone, also after a parameter swap."""
    cfg, corpus, batch = corpus_batch
    torch.manual_seed(0)
    backbone = ImageMolResNet18()
    objectives = [registry.get("objectives", n).build(backbone, corpus, cfg)
                  for n in ("mol.mg100", "mol.mcl", "mol.mir")]
    theta = PretrainModel(backbone, objectives, ["mg100", "mcl", "mir"])
    calls = []
    backbone.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(1)
    together = theta(batch)
    assert len(calls) == 2  # the clean images once for all three, MCL's masked view once
    alone = []
    for obj in objectives:
        torch.manual_seed(1)  # MCL's mask is the first draw either way
        alone.append(obj(backbone, batch))
    assert torch.allclose(together, torch.stack(alone), rtol=1e-5)

    moved = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in theta.named_parameters()}
    torch.manual_seed(1)
    swapped = torch.func.functional_call(theta, moved, (batch,))  # same batch, new θ
    other = copy.deepcopy(theta)
    other.load_state_dict(moved, strict=False)  # the same new θ, as a separate model
    alone = []
    for obj in other.objectives:
        torch.manual_seed(1)
        alone.append(obj(other.backbone, batch))
    assert torch.allclose(swapped, torch.stack(alone), rtol=1e-5)
    assert not torch.allclose(swapped, together)


class Recorder(nn.Module):
    """A stand-in backbone that remembers what it was shown."""

    out_dim = 4

    def forward(self, images):
        self.seen = images
        return torch.zeros(len(images), self.out_dim, requires_grad=True)


def test_jpp_leaves_80_percent_unshuffled_and_uses_the_permutation_set():
    torch.manual_seed(0)
    images = torch.rand(3000, 3, 6, 6)
    jpp, net = JigsawPuzzle(Recorder.out_dim), Recorder()
    jpp(net, {"image": images})
    same = (net.seen == images).flatten(1).all(1)
    expected = 0.8 + 0.2 / 101  # ImageMol: class 0 forced with p = 0.8, else uniform over 101
    assert same.float().mean().item() == pytest.approx(expected, abs=0.025)
    i = int(torch.nonzero(~same)[0])
    candidates = shuffle_tiles(images[i:i + 1].expand(101, -1, -1, -1), jpp.perms)
    assert ((candidates == net.seen[i]).flatten(1).all(1)).sum() == 1


def test_mrd_shows_half_original_half_shuffled_images():
    torch.manual_seed(0)
    images = torch.rand(2000, 3, 6, 6)
    mrd, net = RationalityDiscrimination(Recorder.out_dim), Recorder()
    loss = mrd(net, {"image": images})
    same = (net.seen == images).flatten(1).all(1).float().mean().item()
    assert same == pytest.approx(0.5, abs=0.04)
    assert math.isfinite(float(loss.detach()))
