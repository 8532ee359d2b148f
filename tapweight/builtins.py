"""The core's own plugin: domain-independent heads and probe objectives, registered like
any plugin's."""

from torch import nn

from tapweight import probes
from tapweight.hookspecs import hookimpl
from tapweight.specs import HeadSpec, ObjectiveSpec


def _linear(in_dim: int, n_outputs: int, cfg) -> nn.Module:
    return nn.Linear(in_dim, n_outputs)


def _mlp(in_dim: int, n_outputs: int, cfg) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(in_dim, n_outputs))


@hookimpl
def register_heads(register):
    register(HeadSpec("core.linear", _linear, "one linear layer: features -> outputs"))
    register(HeadSpec("core.mlp", _mlp, "two-layer MLP with ReLU and dropout 0.1"))


@hookimpl
def register_objectives(register):
    register(ObjectiveSpec("core.random_labels", probes.build_random_labels,
                           "harmful probe: fit labels drawn at random for every example"))
    register(ObjectiveSpec("core.feature_collapse", probes.build_feature_collapse,
                           "harmful probe: minimise the features' squared norm"))
