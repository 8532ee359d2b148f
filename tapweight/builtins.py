"""The core's own plugin: domain-independent heads and the built-in experiment trackers
(:mod:`tapweight.loggers`), registered like any plugin's.

Registration imports nothing heavy (the command line lists these without torch); the
builders import torch when a run calls them.
"""

from tapweight import loggers
from tapweight.hookspecs import hookimpl
from tapweight.specs import HeadSpec


def _linear(in_dim: int, n_outputs: int, cfg):
    from torch import nn

    return nn.Linear(in_dim, n_outputs)


def _mlp(in_dim: int, n_outputs: int, cfg):
    from torch import nn

    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(in_dim, n_outputs))


@hookimpl
def register_heads(register):
    register(HeadSpec("core.linear", _linear, "one linear layer: features -> outputs"))
    register(HeadSpec("core.mlp", _mlp, "two-layer MLP with ReLU and dropout 0.1"))


@hookimpl
def register_loggers(register):
    for spec in loggers.BUILTIN:
        register(spec)
