"""The molecular domain's registrations: domain, backbone, objectives, data sets and tasks.

Every ``tapweight`` command loads this module, so it imports neither RDKit nor torch: it
checks that the ``tapweight[mol]`` extra is installed (a missing one shows up as the
ModuleNotFoundError the loader turns into "pip install 'tapweight[mol]'") and registers
builders that import the domain's modules when a run calls them (`tapweight.plugin.lazy`).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from tapweight import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    DomainData,
    ExportFormat,
    ObjectiveSpec,
    TaskSpec,
    deferred,
    hookimpl,
    require,
)
from tapweight_mol import moleculenet
from tapweight_mol.options import (
    DEFAULT_STEPS,
    PAPER_STEPS,
    PRESETS,
    PRETRAIN_PRESETS,
    REGRESSION_DEFAULTS,
    MolOptions,
)

require("rdkit", "torchvision", "PIL")  # the [mol] extra, found without importing it

DEFAULT_OBJECTIVES = ("mol.mg100", "mol.mg1000", "mol.mg10000", "mol.jpp", "mol.mcl")
EXPORTS = (
    ExportFormat("torchvision", deferred("tapweight_mol.inference:write_torchvision"),
                 "resnet18.pth: a torchvision.models.resnet18() state dict (fine-tuned: the head as fc)"),
    ExportFormat("imagemol", deferred("tapweight_mol.inference:write_imagemol"),
                 "ImageMol.pth.tar: ImageMol's pretrain.py layout, for its finetune.py --resume"),
)


def build_data_for_predict(cfg, table, split, task) -> DomainData:
    """`build_data`, with the predictor of ``tapweight predict``
    (molecules are drawn from the config alone: nothing is fitted)."""
    from tapweight_mol import inference
    from tapweight_mol.data import build_data

    return replace(build_data(cfg, table, split, task), predictor=inference.smiles_predictor(cfg))


@hookimpl
def register_domains(register):
    register(Domain(
        name="mol",
        description="molecules as RDKit images, ImageMol ResNet18, MoleculeNet tasks",
        options=MolOptions,
        backbone="mol.resnet18",
        objectives=DEFAULT_OBJECTIVES,
        build_data=build_data_for_predict,
        splits={"scaffold": deferred("tapweight_mol.splits:scaffold_split"),
                "random_scaffold": deferred("tapweight_mol.splits:random_scaffold_split")},
        head="core.linear",
        presets=PRESETS,
        load_predictor=deferred("tapweight_mol.inference:load_predictor"),
        exports=EXPORTS,
        build_corpus=deferred("tapweight_mol.data:build_corpus"),
        pretrain_presets=PRETRAIN_PRESETS,
    ))


def _resnet18(cfg, data):
    from tapweight_mol import backbone

    return backbone.build(cfg)


@hookimpl
def register_backbones(register):
    register(BackboneSpec("mol.resnet18", _resnet18,
                          "torchvision ResNet18 without fc, 512-d (ImageMol); --init loads "
                          "ImageMol, torchvision or tapweight checkpoints"))


def _mg(k: int, net, corpus, cfg):
    from tapweight_mol import objectives

    ids, n_clusters = corpus.clusters(k)
    return objectives.ClusterClassification(net.out_dim, ids, n_clusters)


def _jpp(net, corpus, cfg):
    from tapweight_mol import backbone, objectives

    o = cfg.options
    jpp = objectives.JigsawPuzzle(net.out_dim, o.jigsaw_permutations, o.jigsaw_unshuffled)
    if cfg.init and (head := backbone.imagemol_head(cfg.init, "jigsaw_classifier")):
        jpp.start_from(head, f"--init '{cfg.init}'")
    return jpp


def _mcl(net, corpus, cfg):
    from tapweight_mol import objectives

    return objectives.MaskedConsistency(cfg.options.mcl_mask_ratio)


def _mrd(net, corpus, cfg):
    from tapweight_mol import objectives

    return objectives.RationalityDiscrimination(net.out_dim, cfg.options.jigsaw_permutations)


def _mir(net, corpus, cfg):
    from tapweight_mol import objectives

    return objectives.ImageReconstruction(net.out_dim, cfg.options.mir_size)


@hookimpl
def register_objectives(register):
    for k in (100, 1000, 10000):
        register(ObjectiveSpec(f"mol.mg{k}", partial(_mg, k),
                               f"classify the k-means cluster (k={k}) of MACCS keys"))
    register(ObjectiveSpec("mol.jpp", _jpp, "jigsaw puzzle: which of 101 tile orders"))
    register(ObjectiveSpec("mol.mcl", _mcl, "feature distance: image vs its masked view"))
    register(ObjectiveSpec("mol.mrd", _mrd, "original vs tile-shuffled (irrational) image"))
    register(ObjectiveSpec("mol.mir", _mir, "reconstruct the image from its features"))


@hookimpl
def register_datasets(register):
    for name, spec in moleculenet.SETS.items():
        register(DatasetSpec(f"mol.{name}", partial(moleculenet.load, name),
                             f"MoleculeNet {spec.description}"))


@hookimpl
def register_tasks(register):
    for name, spec in moleculenet.SETS.items():
        classification = spec.loss == "bce"
        register(TaskSpec(
            domain="mol", name=name, dataset=f"mol.{name}", split="scaffold", loss=spec.loss,
            metric="roc_auc" if classification else "rmse",
            extra_metrics=() if classification else ("mae",),
            defaults={"steps": PAPER_STEPS.get(name, DEFAULT_STEPS)},
            overrides={} if classification else REGRESSION_DEFAULTS,
            description=f"MoleculeNet {spec.description}, scaffold split 8:1:1"))
