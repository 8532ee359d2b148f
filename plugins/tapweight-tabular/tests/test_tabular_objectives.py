"""The three objectives: one finite scalar with gradients into the backbone, replayable
randomness, and each corruption checked against what its paper prescribes."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from tapweight_tabular import objectives as obj

BUILDERS = {"mfr": obj.build_mfr, "denoise": obj.build_denoise, "scarf": obj.build_scarf}


@pytest.fixture
def corpus():
    return TensorDataset(torch.randn(40, 6, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_objective_is_a_finite_scalar_with_gradients_into_the_backbone(name, cfg, backbone, corpus):
    objective = BUILDERS[name](backbone, corpus, cfg)
    loss = objective(backbone, corpus.tensors[0][:16])
    assert loss.shape == () and math.isfinite(loss.item())
    loss.backward()
    for param in list(backbone.parameters()) + list(objective.parameters()):
        assert param.grad is not None and param.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_objective_replays_the_global_generator_and_keeps_no_backbone(name, cfg, backbone, corpus):
    objective = BUILDERS[name](backbone, corpus, cfg)
    rows = corpus.tensors[0][:16]
    losses = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        losses.append(objective(backbone, rows).item())
    assert losses[0] == losses[1]  # the engine's replay sees the same draw
    assert losses[0] != losses[2]
    assert not any(m is backbone for m in objective.modules())


def test_mfr_masks_the_given_fraction_and_scores_only_masked_entries(cfg, backbone):
    mfr = obj.MaskedFeatureReconstruction(backbone, hidden=16, mask_rate=0.3)
    rows = torch.randn(4000, 6) + 5  # no entry is 0 by chance
    torch.manual_seed(0)
    masked, where = mfr.corrupt(rows)
    assert abs(where.mean().item() - 0.3) < 0.01
    assert torch.all(masked[where.bool()] == 0)
    assert torch.equal(masked[~where.bool()], rows[~where.bool()])


def test_mfr_loss_is_the_mse_over_masked_entries(cfg, backbone):
    """Make the decoder output a constant c: the loss must equal mean((c - x)^2) over the
    entries the mask picked, computed here from the same draw."""
    mfr = obj.MaskedFeatureReconstruction(backbone, hidden=16, mask_rate=0.5)
    with torch.no_grad():
        for p in mfr.decoder.parameters():
            p.zero_()
        mfr.decoder[-1].bias.fill_(0.7)
    rows = torch.randn(32, 6)
    torch.manual_seed(5)
    _, where = mfr.corrupt(rows)
    expected = ((0.7 - rows.numpy()) ** 2)[where.numpy().astype(bool)].mean()
    torch.manual_seed(5)
    assert mfr(backbone, rows).item() == pytest.approx(expected, rel=1e-5)


def test_denoise_adds_gaussian_noise_of_the_given_sigma(backbone):
    den = obj.Denoising(backbone, hidden=16, sigma=0.5)
    rows = torch.zeros(5000, 6)
    torch.manual_seed(0)
    noisy, where = den.corrupt(rows)
    assert torch.all(where == 1)
    assert noisy.mean().abs() < 0.02
    assert noisy.std().item() == pytest.approx(0.5, rel=0.03)


def test_scarf_corrupts_exactly_the_fraction_of_features_per_row():
    rows = torch.zeros(1000, 10)
    marginals = torch.ones(20, 10)
    torch.manual_seed(0)
    corrupted, chosen = obj.scarf_corrupt(rows, marginals, rate=0.6)
    assert torch.all(chosen.sum(1) == 6)  # round(0.6 * 10) per row
    assert torch.all(corrupted[chosen] == 1) and torch.all(corrupted[~chosen] == 0)
    # every feature is picked equally often: 0.6 of the rows each, up to sampling noise
    assert np.allclose(chosen.float().mean(0).numpy(), 0.6, atol=0.06)


def test_scarf_draws_replacements_from_each_columns_marginal():
    """Column j of the marginals holds values 100*j + {0, 1, 2} in proportions 1:2:7; the
    replacements of column j must be those values in those proportions."""
    counts = {0: 10, 1: 20, 2: 70}
    column = torch.tensor([v for v, n in counts.items() for _ in range(n)], dtype=torch.float32)
    marginals = torch.stack([column + 100 * j for j in range(4)], dim=1)  # [100, 4]
    rows = torch.full((20000, 4), -1.0)
    torch.manual_seed(0)
    corrupted, chosen = obj.scarf_corrupt(rows, marginals, rate=0.5)
    for j in range(4):
        drawn = corrupted[chosen[:, j], j] - 100 * j
        assert set(drawn.unique().tolist()) <= set(counts)
        for value, n in counts.items():
            share = (drawn == value).float().mean().item()
            assert share == pytest.approx(n / 100, abs=0.015)


def test_info_nce_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    tau = 0.5
    an = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
    bn = b.numpy() / np.linalg.norm(b.numpy(), axis=1, keepdims=True)
    expected = np.mean([-np.log(np.exp(an[i] @ bn[i] / tau) / np.exp(an[i] @ bn.T / tau).sum())
                        for i in range(5)])
    assert obj.info_nce(a, b, tau).item() == pytest.approx(expected, rel=1e-5)


def test_scarf_marginals_come_from_the_corpus_and_are_not_saved(cfg, backbone, corpus):
    scarf = obj.build_scarf(backbone, corpus, cfg)
    assert torch.equal(scarf.marginals, corpus.tensors[0])
    assert "marginals" not in scarf.state_dict()
