"""The hook implementations: what the ``tabular`` domain registers with tapweight.

Found through the entry point ``tabular = "tapweight_tabular.plugin"`` in the group
``tapweight`` (see pyproject.toml); every import below is tapweight's public API.
"""

from __future__ import annotations

from functools import partial

from tapweight import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    ObjectiveSpec,
    TaskSpec,
    hookimpl,
)

from tapweight_tabular import backbone, features, objectives
from tapweight_tabular.data import (
    SKLEARN_DATASETS,
    build_corpus,
    build_data,
    load_sklearn,
    stratified_split,
)
from tapweight_tabular.options import PRESETS, TabularOptions

DOMAIN = "tabular"

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
        build_data=build_data,
        splits={"stratified": stratified_split},
        presets=PRESETS,
        load_predictor=features.load_predictor,
        build_corpus=build_corpus,
    ))


@hookimpl
def register_backbones(register):
    register(BackboneSpec("tabular.mlp", backbone.build_mlp,
                          "ReLU MLP on standardized features (tabular.hidden/layers/out_dim)"))


@hookimpl
def register_objectives(register):
    register(ObjectiveSpec("tabular.mfr", objectives.build_mfr,
                           "masked-feature reconstruction (VIME-style masking, MSE on masked)"))
    register(ObjectiveSpec("tabular.denoise", objectives.build_denoise,
                           "Gaussian-noise denoising autoencoder"))
    register(ObjectiveSpec("tabular.scarf", objectives.build_scarf,
                           "SCARF: contrastive InfoNCE against a marginal-resampled view"))


@hookimpl
def register_datasets(register):
    for name, (_, _, description) in SKLEARN_DATASETS.items():
        register(DatasetSpec(f"{DOMAIN}.{name}", partial(load_sklearn, name), description))


@hookimpl
def register_tasks(register):
    for task in TASKS:
        register(task)
