"""The core's own plugin: domain-independent heads, probe objectives, the built-in
experiment trackers (`tapweight.job.trackers`), weighting methods
(`tapweight.method.weightings`) and hypergradient estimators
(`tapweight.method.estimators`), registered like any plugin's.

Registration imports nothing heavy (the command line lists these without torch); the
builders import torch when a run calls them.
"""

from tapweight.plugin.hookspecs import hookimpl
from tapweight.plugin.lazy import deferred
from tapweight.plugin.specs import EstimatorSpec, HeadSpec, LoggerSpec, MethodSpec, ObjectiveSpec


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


_RULES = "tapweight.method.weightings"
#: (name, builder, description, argument) of the core's weighting methods (docs/weightings.md)
WEIGHTINGS = (
    ("none", "static:NoPretraining", "no continued pretraining: the final fine-tune starts from the initial backbone"),
    ("uniform", "static:Uniform", "λ_k = 1/K throughout (level I only)"),
    ("fixed", "static:Fixed", "λ = --set weights=[...] normalised, throughout (level I only)"),
    ("single", "static:Single", "that objective alone, λ = 1 (level I only)", "objective"),
    ("tapweight", "tapweight:TapWeight",
     "TapWeight (Zhang et al., TMLR 2025): α stepped by the hypergradient dL_val/dλ (reweight.*)"),
    ("tapweight-normalized", "tapweight:TapWeightNormalized",
     "TapWeight with its α step divided by the hypergradient's running RMS"),
    ("olaux", "tapweight:OLAux",
     "OL-AUX (Lin et al., NeurIPS 2019): the hypergradient summed over a horizon of N steps, then one α step"),
    ("cosine", "cosine:Cosine",
     "META-TARTAN / AANG (Dery et al., ICLR 2022/2023): logits += lr · cos(∇L_k, u_b)"),
    ("gating", "cosine:Gating", "Du et al. 2018: an objective is on only while cos(∇L_k, u_b) > 0"),
    ("doge", "doge:DoGE",
     "DoGE (Fan et al., ICML 2024): mirror-descent step on ⟨∇L_k, u_b⟩ / mean ‖∇L_j‖, clipped"),
    ("gradnorm", "gradnorm:GradNorm",
     "GradNorm (Chen et al., ICML 2018): balance the gradient norms; no task signal (control)"),
)


@hookimpl
def register_methods(register):
    for name, target, description, *argument in WEIGHTINGS:
        register(MethodSpec(name, deferred(f"{_RULES}.{target}"), description, *argument))


#: (name, class in tapweight.method.estimators, description) of the core's estimators, ``auto``
#: aside (docs/method.md)
ESTIMATORS = (
    ("fd", "CentralDifference", "central difference, two float32 forwards at θ ± εd (Betty's darts)"),
    ("fd-forward", "ForwardDifference", "one forward at θ + εd less level I's own losses"),
    ("jvp", "ForwardMode", "one forward-mode JVP: exact"),
    ("neumann", "NeumannSeries", "implicit (IFT): inverse Hessians by Neumann series"),
    ("cg", "ConjugateGradient", "implicit (IFT): inverse Hessians by conjugate gradients"),
)


@hookimpl
def register_estimators(register):
    for name, cls, description in ESTIMATORS:
        register(EstimatorSpec(name, deferred(f"tapweight.method.estimators:{cls}"), description))
