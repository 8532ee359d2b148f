"""The core's own plugin: domain-independent heads, probe objectives and the built-in
experiment trackers (:mod:`tapweight.job.trackers`), registered like any plugin's.

Registration imports nothing heavy (the command line lists these without torch); the
builders import torch when a run calls them.
"""

from tapweight.plugin.hookspecs import hookimpl
from tapweight.plugin.lazy import deferred
from tapweight.plugin.specs import HeadSpec, LoggerSpec, ObjectiveSpec


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
def register_objectives(register):
    register(ObjectiveSpec("core.random_labels", deferred("tapweight.method.probes:build_random_labels"),
                           "harmful probe: fit labels drawn at random for every example"))
    register(ObjectiveSpec("core.feature_collapse", deferred("tapweight.method.probes:build_feature_collapse"),
                           "harmful probe: minimise the features' squared norm"))


@hookimpl
def register_loggers(register):
    register(LoggerSpec("tensorboard", deferred("tapweight.job.trackers:TensorBoard"),
                        "TensorBoard event files in seed<k>/tensorboard (extra: tapweight[tensorboard])"))
    register(LoggerSpec("mlflow", deferred("tapweight.job.trackers:MLflow"),
                        "MLflow: $MLFLOW_TRACKING_URI or mlflow.db in the run folder (extra: tapweight[mlflow])"))
