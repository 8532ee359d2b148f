"""The hook implementations: what the ``tabular`` domain registers with tapweight.

Found through the entry point ``tabular = "tapweight_tabular.plugin"`` in the group
``tapweight`` (see pyproject.toml); every import below is tapweight's public API.

Every ``tapweight`` command (``--help`` and ``list`` too) imports this module, so it stays
cheap: the builders and loaders are ``deferred("module:function")`` stand-ins, and the
modules that import torch and scikit-learn load when a run first calls them.
"""

from __future__ import annotations

from functools import partial

from tapweight import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    ObjectiveSpec,
    TaskSpec,
    deferred,
    hookimpl,
)

from tapweight_tabular.catalog import SKLEARN_DATASETS
from tapweight_tabular.options import PRESETS, TabularOptions

DOMAIN = "tabular"
CUSTOM = "your own CSV: numeric feature columns and tabular.label_column (classes or values)"

TASKS = (
    TaskSpec(DOMAIN, "breast-cancer", "tabular.breast-cancer", "stratified", "bce", "roc_auc",
             description="benign vs malignant tumour (binary)"),
    TaskSpec(DOMAIN, "wine", "tabular.wine", "stratified", "ce", "accuracy", n_classes=3,
             description="wine cultivar from its chemistry (3 classes)"),
    TaskSpec(DOMAIN, "digits", "tabular.digits", "stratified", "ce", "accuracy", n_classes=10,
             description="handwritten digit from 8x8 pixels (10 classes)"),
    TaskSpec(DOMAIN, "diabetes", "tabular.diabetes", "stratified", "mse", "rmse",
             extra_metrics=("pearson",),
             description="disease progression after one year (regression)"),
)


@hookimpl
def register_domains(register):
    register(Domain(
        name=DOMAIN,
        description="rows of numeric features: MLP backbone, MFR/denoising/SCARF objectives",
        options=TabularOptions,
        backbone="tabular.mlp",
        objectives=("tabular.mfr", "tabular.denoise", "tabular.scarf"),
        build_data=deferred("tapweight_tabular.data:build_data"),
        splits={"stratified": deferred("tapweight_tabular.data:stratified_split")},
        presets=PRESETS,
        load_predictor=deferred("tapweight_tabular.features:load_predictor"),
        build_corpus=deferred("tapweight_tabular.data:build_corpus"),
    ))


@hookimpl
def register_backbones(register):
    register(BackboneSpec("tabular.mlp", deferred("tapweight_tabular.backbone:build_mlp"),
                          "ReLU MLP on standardized features (tabular.hidden/layers/out_dim)"))


@hookimpl
def register_objectives(register):
    for name, description in (
            ("mfr", "masked-feature reconstruction (VIME-style masking, MSE on masked)"),
            ("denoise", "Gaussian-noise denoising autoencoder"),
            ("scarf", "SCARF: contrastive InfoNCE against a marginal-resampled view")):
        build = deferred(f"tapweight_tabular.objectives:build_{name}")
        register(ObjectiveSpec(f"{DOMAIN}.{name}", build, description))


@hookimpl
def register_datasets(register):
    for name, (_, _, description) in SKLEARN_DATASETS.items():
        load = partial(deferred("tapweight_tabular.data:load_sklearn"), name)
        register(DatasetSpec(f"{DOMAIN}.{name}", load, description))
    register(DatasetSpec(f"{DOMAIN}.custom", deferred("tapweight_tabular.custom:load"), CUSTOM))


@hookimpl
def register_tasks(register):
    for task in TASKS:
        register(task)
    register(TaskSpec(DOMAIN, "custom", f"{DOMAIN}.custom", "stratified", "ce", "accuracy",
                      description=CUSTOM, fit=deferred("tapweight_tabular.custom:fit")))
