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
    TapweightError,
    TaskSpec,
    deferred,
    hookimpl,
    require,
)
from tapweight_mol import moleculenet
from tapweight_mol.graphs import BACKBONES as GRAPH_BACKBONES
from tapweight_mol.graphs import is_graph_backbone
from tapweight_mol.options import (
    DEFAULT_STEPS,
    PAPER_STEPS,
    PRESETS,
    PRETRAIN_PRESETS,
    REGRESSION_DEFAULTS,
    MolOptions,
)

require("rdkit", "torchvision", "PIL", "torch_geometric")  # the [mol] extra, found without importing it

CUSTOM = ("your own CSV of SMILES and labels (--data; mol.smiles_column, mol.target_columns), "
          "classification or regression from its labels")
DEFAULT_OBJECTIVES = ("mol.mg100", "mol.mg1000", "mol.mg10000", "mol.jpp", "mol.mcl")
#: what the GNN backbones train on by default: Hu et al.'s node-level objectives, GraphCL and MG-k
GRAPH_OBJECTIVES = ("mol.attrmask", "mol.contextpred", "mol.edgepred", "mol.graphcl",
                    "mol.mg100", "mol.mg1000", "mol.mg10000")
EXPORTS = (
    ExportFormat("torchvision", deferred("tapweight_mol.inference:write_torchvision"),
                 "resnet18.pth: a torchvision.models.resnet18() state dict (fine-tuned: the head as fc)"),
    ExportFormat("imagemol", deferred("tapweight_mol.inference:write_imagemol"),
                 "ImageMol.pth.tar: ImageMol's pretrain.py layout, for its finetune.py --resume"),
    ExportFormat("hu2020", deferred("tapweight_mol.graphs.loading:write_hu2020"),
                 "gnn.pth: Hu et al.'s GNN layout (GNN backbones; fine-tuned: their GNN_graphpred, "
                 "the head as graph_pred_linear)"),
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
        description="molecules as RDKit images (ImageMol ResNet18) or graphs (Hu et al.'s GNNs), MoleculeNet tasks",
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


def _gnn(name: str, cfg, data):
    from tapweight_mol.graphs import loading

    return loading.build(name, cfg)


@hookimpl
def register_backbones(register):
    register(BackboneSpec("mol.resnet18", _resnet18,
                          "torchvision ResNet18 without fc, 512-d (ImageMol); --init loads "
                          "ImageMol, torchvision or tapweight checkpoints"))
    for name, kind in GRAPH_BACKBONES.items():
        register(BackboneSpec(name, partial(_gnn, name),
                              f"Hu et al.'s (ICLR 2020) {kind} GNN on molecular graphs, 5 layers, 300-d, "
                              "mean pooling; --init loads their released .pth files",
                              objectives=GRAPH_OBJECTIVES))


def _images_only(name: str, cfg) -> None:
    """Refuse an image objective in a run whose backbone reads graphs."""
    if is_graph_backbone(cfg.backbone):
        raise TapweightError(f"objective {name} works on images and backbone {cfg.backbone} reads graphs: "
                             f"drop it from objectives (graph objectives: {', '.join(GRAPH_OBJECTIVES)})")


def _mg(k: int, net, corpus, cfg):
    from tapweight_mol import objectives

    ids, n_clusters = corpus.clusters(k)
    return objectives.ClusterClassification(net.out_dim, ids, n_clusters)


def _jpp(net, corpus, cfg):
    _images_only("mol.jpp", cfg)
    from tapweight_mol import backbone, objectives

    o = cfg.options
    jpp = objectives.JigsawPuzzle(net.out_dim, o.jigsaw_permutations, o.jigsaw_unshuffled)
    if cfg.init and (head := backbone.imagemol_head(cfg.init, "jigsaw_classifier")):
        jpp.start_from(head, f"--init '{cfg.init}'")
    return jpp


def _mcl(net, corpus, cfg):
    _images_only("mol.mcl", cfg)
    from tapweight_mol import objectives

    return objectives.MaskedConsistency(cfg.options.mcl_mask_ratio)


def _mrd(net, corpus, cfg):
    _images_only("mol.mrd", cfg)
    from tapweight_mol import objectives

    return objectives.RationalityDiscrimination(net.out_dim, cfg.options.jigsaw_permutations)


def _mir(net, corpus, cfg):
    _images_only("mol.mir", cfg)
    from tapweight_mol import objectives

    return objectives.ImageReconstruction(net.out_dim, cfg.options.mir_size)


def _graph_objective(build, name: str, net, corpus, cfg):
    """``build(net)`` for a graph backbone; an image backbone is refused with one line."""
    if not hasattr(net, "node_states"):
        raise TapweightError(f"objective {name} reads atoms and bonds: it needs a graph backbone "
                             "(--backbone mol.gin, mol.gcn, mol.graphsage or mol.gat)")
    return build(net)


def _attrmask(net):
    from tapweight_mol.graphs import objectives

    return objectives.AttributeMasking(net.out_dim)


def _contextpred(net):
    from tapweight_mol.graphs import objectives

    return objectives.build_context_prediction(net)


def _edgepred(net):
    from tapweight_mol.graphs import objectives

    return objectives.EdgePrediction()


def _graphcl(net):
    from tapweight_mol.graphs import graphcl

    return graphcl.GraphContrastive(net.out_dim)


GRAPH_PRETRAINING = {
    "mol.attrmask": (_attrmask, "graphs: mask 15% of atoms, predict their types (Hu et al. 2020)"),
    "mol.contextpred": (_contextpred, "graphs: K-hop substructure vs its context ring (Hu et al. 2020)"),
    "mol.edgepred": (_edgepred, "graphs: bonded vs random non-bonded atom pairs (Hu et al. 2020)"),
    "mol.graphcl": (_graphcl, "graphs: NT-Xent between two augmented views (GraphCL, You et al. 2020)"),
}


@hookimpl
def register_objectives(register):
    for k in (100, 1000, 10000):
        register(ObjectiveSpec(f"mol.mg{k}", partial(_mg, k),
                               f"classify the k-means cluster (k={k}) of MACCS keys"))
    register(ObjectiveSpec("mol.jpp", _jpp, "jigsaw puzzle: which of 101 tile orders"))
    register(ObjectiveSpec("mol.mcl", _mcl, "feature distance: image vs its masked view"))
    register(ObjectiveSpec("mol.mrd", _mrd, "original vs tile-shuffled (irrational) image"))
    register(ObjectiveSpec("mol.mir", _mir, "reconstruct the image from its features"))
    for name, (build, description) in GRAPH_PRETRAINING.items():
        register(ObjectiveSpec(name, partial(_graph_objective, build, name), description))


@hookimpl
def register_datasets(register):
    for name, spec in moleculenet.SETS.items():
        register(DatasetSpec(f"mol.{name}", partial(moleculenet.load, name),
                             f"MoleculeNet {spec.description}"))
    register(DatasetSpec("mol.custom", deferred("tapweight_mol.custom:load"), CUSTOM))


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
    register(TaskSpec(domain="mol", name="custom", dataset="mol.custom", split="scaffold", loss="bce",
                      metric="roc_auc", description=CUSTOM, fit=deferred("tapweight_mol.custom:fit")))
