"""Self-supervised objectives for rows of standardized features; each returns ONE loss.

- ``tabular.mfr``: masked-feature reconstruction. Each feature is masked with
  probability p (VIME, Yoon et al., NeurIPS 2020, uses p_m = 0.3), set to 0 (its train
  mean after standardization), and a decoder recovers the masked values (MSE on them).
- ``tabular.denoise``: denoising autoencoder (Vincent et al., ICML 2008) with additive
  Gaussian noise x̃ = x + σε; a decoder recovers x (MSE on every feature).
- ``tabular.scarf``: SCARF (Bahri et al., ICLR 2022). A random subset of ⌊c·F⌉ features of
  each row is replaced by values drawn from the features' empirical marginals (over the
  pretraining corpus); InfoNCE with temperature τ pulls g(f(x_i)) towards g(f(x̃_i)) and
  away from g(f(x̃_j)), j ≠ i, with g a projection head.

Randomness comes from torch's global generator (the engine replays it), the objectives
keep no state that changes between calls, and the backbone arrives as an argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tapweight_tabular.backbone import mlp


class Reconstruction(nn.Module):
    """Corrupt the rows, encode, decode, and score the reconstruction where it counts.

    Subclasses define ``corrupt(rows) -> (corrupted, where)``: ``where`` ``[B, F]`` weights
    each entry of the squared error (1 = scored).
    """

    def __init__(self, backbone: nn.Module, hidden: int):
        super().__init__()
        self.decoder = mlp(backbone.out_dim, hidden, 1, backbone.n_features)

    def corrupt(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, backbone: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        corrupted, where = self.corrupt(rows)  # [B, F] each
        error = (self.decoder(backbone(corrupted)) - rows) ** 2  # [B, F]
        return (error * where).sum() / where.sum().clamp_min(1.0)


class MaskedFeatureReconstruction(Reconstruction):
    """``tabular.mfr``: recover features masked with probability ``mask_rate``."""

    def __init__(self, backbone: nn.Module, hidden: int, mask_rate: float):
        super().__init__(backbone, hidden)
        self.mask_rate = mask_rate

    def corrupt(self, rows):
        mask = (torch.rand(rows.shape, device=rows.device) < self.mask_rate).to(rows.dtype)
        return rows * (1 - mask), mask


class Denoising(Reconstruction):
    """``tabular.denoise``: recover x from x + σε, ε ~ N(0, I)."""

    def __init__(self, backbone: nn.Module, hidden: int, sigma: float):
        super().__init__(backbone, hidden)
        self.sigma = sigma

    def corrupt(self, rows):
        noise = torch.randn(rows.shape, device=rows.device, dtype=rows.dtype)
        return rows + self.sigma * noise, torch.ones_like(rows)


def scarf_corrupt(rows: torch.Tensor, marginals: torch.Tensor, rate: float):
    """SCARF's corruption: in each row, replace ``round(rate * F)`` features chosen uniformly
    at random by draws from their empirical marginals.

    ``rows`` ``[B, F]``; ``marginals`` ``[N, F]`` (the rows whose columns are the marginals).
    Returns the corrupted rows ``[B, F]`` and the boolean mask of replaced entries ``[B, F]``.
    """
    b, f = rows.shape
    q = round(rate * f)
    chosen_cols = torch.rand(b, f, device=rows.device).topk(q, dim=1).indices  # [B, q]
    chosen = torch.zeros(b, f, dtype=torch.bool, device=rows.device).scatter_(1, chosen_cols, True)
    donors = torch.randint(len(marginals), (b, f), device=rows.device)  # a corpus row per entry
    draws = marginals.gather(0, donors).to(rows.dtype)  # draws[i, j] = marginals[donors[i, j], j]
    return torch.where(chosen, draws, rows), chosen


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE (van den Oord et al., 2018) with cosine similarity: row i of ``anchors``
    ``[B, D]`` must pick row i of ``positives`` ``[B, D]`` among all B."""
    logits = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T / temperature  # [B, B]
    return F.cross_entropy(logits.float(), torch.arange(len(logits), device=logits.device))


class Scarf(nn.Module):
    """``tabular.scarf``: contrast each row with its SCARF-corrupted view."""

    def __init__(self, backbone: nn.Module, corpus: TensorDataset, hidden: int,
                 corruption: float, temperature: float):
        super().__init__()
        self.corruption, self.temperature = corruption, temperature
        self.projection = mlp(backbone.out_dim, hidden, 1, backbone.out_dim)  # g, two layers
        # the corpus's columns are the marginals; fixed, so not saved with checkpoints
        self.register_buffer("marginals", corpus.tensors[0].clone(), persistent=False)

    def forward(self, backbone: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        corrupted, _ = scarf_corrupt(rows, self.marginals, self.corruption)
        anchors = self.projection(backbone(rows))  # [B, out_dim]
        positives = self.projection(backbone(corrupted))  # [B, out_dim]
        return info_nce(anchors, positives, self.temperature)


def build_mfr(backbone, corpus, cfg) -> MaskedFeatureReconstruction:
    return MaskedFeatureReconstruction(backbone, cfg.options.hidden, cfg.options.mfr_mask_rate)


def build_denoise(backbone, corpus, cfg) -> Denoising:
    return Denoising(backbone, cfg.options.hidden, cfg.options.denoise_sigma)


def build_scarf(backbone, corpus, cfg) -> Scarf:
    o = cfg.options
    return Scarf(backbone, corpus, o.hidden, o.scarf_corruption, o.scarf_temperature)
