"""The core's own plugin: domain-independent heads, registered like any plugin's."""

from torch import nn

from tapweight.hookspecs import hookimpl
from tapweight.specs import HeadSpec


def _linear(in_dim: int, n_outputs: int, cfg) -> nn.Module:
    return nn.Linear(in_dim, n_outputs)


def _mlp(in_dim: int, n_outputs: int, cfg) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(in_dim, n_outputs))


@hookimpl
def register_heads(register):
    register(HeadSpec("core.linear", _linear, "one linear layer: features -> outputs"))
    register(HeadSpec("core.mlp", _mlp, "two-layer MLP with ReLU and dropout 0.1"))
