"""The ``tabular.mlp`` backbone: a ReLU multi-layer perceptron on standardized features.

SCARF (Bahri et al., ICLR 2022) and VIME (Yoon et al., NeurIPS 2020) both encode rows
with a plain MLP; so does this one: ``layers`` blocks of Linear-ReLU(-Dropout) of width
``hidden``, then a linear map to ``out_dim`` features.
"""

from __future__ import annotations

import torch
from tapweight import load_backbone
from torch import nn


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` hidden Linear-ReLU blocks of width ``hidden``, then Linear to ``out_dim``."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            blocks.append(nn.Dropout(dropout))
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, out_dim))


class MLPBackbone(nn.Module):
    """Rows ``[B, n_features]`` -> features ``[B, out_dim]``."""

    def __init__(self, n_features: int, hidden: int, layers: int, out_dim: int, dropout: float):
        super().__init__()
        self.n_features, self.out_dim = n_features, out_dim
        self.net = mlp(n_features, hidden, layers, out_dim, dropout)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.net(rows)


def build_mlp(cfg, data) -> MLPBackbone:
    """Build from ``cfg.options`` for the data's input width; ``cfg.init`` names a state dict
    (``.pt``) to start from."""
    o = cfg.options
    model = MLPBackbone(data.info["features"], o.hidden, o.layers, o.out_dim, o.dropout)
    if cfg.init:
        load_backbone(model, cfg.init)
    return model

