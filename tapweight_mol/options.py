"""The molecular domain's options (``--set mol.<field>=...``) and presets.

Defaults are ImageMol's: 224-pixel depictions, 100 jigsaw permutations of which 80 % of
images stay unshuffled, a quarter of the image masked for MCL, 64-pixel MIR targets.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapweight import check_options, check_task_type, setting


@dataclass
class MolOptions:
    image_size: int = setting(224, "pixels per side of the RGB depiction (ImageMol: 224)")
    render_workers: int = setting(0,
        "processes canonicalizing a corpus and computing its fingerprints (0: one per core)")
    cache_dir: str = setting("", "images, prepared corpora and cluster ids; empty: <tapweight cache>/mol")
    strict_load: bool = setting(True, "--init must hold every backbone tensor (false: a partial load)")
    jigsaw_permutations: int = setting(100, "JPP classes besides \"unshuffled\": the first n of ImageMol's 100")
    jigsaw_unshuffled: float = setting(0.8, "probability that JPP leaves an image as is (ImageMol)")
    mcl_mask_ratio: float = setting(0.25, "share of the 8×8 grid cells masked for MCL")
    mir_size: int = setting(64, "side of the image MIR reconstructs (ImageMol: 64)")
    gnn_layers: int = setting(5, "GNN backbones (mol.gin, mol.gcn...): message-passing layers (Hu et al.: 5)")
    gnn_dim: int = setting(300, "GNN backbones: node state width (Hu et al.: 300)")
    gnn_dropout: float = setting(0.0, "GNN backbones: dropout after every layer (Hu et al. pretrain with 0)")
    smiles_column: str = setting("smiles", "custom task: the column of SMILES")
    target_columns: list[str] = setting([], "custom task: label columns; empty: all but SMILES")
    task_type: str = setting("auto", "custom task: auto | classification (0/1 per column) | regression")
    metric: str = setting("", "custom task: the selection metric; empty: roc_auc (classification) or rmse")
    name: str = setting("", "custom task: the run's name in folders and tables; empty: the data file's")

    def __post_init__(self):
        check_options("mol", self, {
            "image_size": ">= 16", "render_workers": ">= 0", "jigsaw_permutations": ">= 1",
            "jigsaw_unshuffled": "in [0, 1]", "mcl_mask_ratio": "in [0, 1)", "mir_size": ">= 1",
            "gnn_layers": ">= 1", "gnn_dim": ">= 1", "gnn_dropout": "in [0, 1)"})
        check_task_type(self.task_type, "mol.task_type")


PRESETS = {
    # 2 CPU cores, real BBBP in under 10 minutes: 64-px images, small batches, 100 steps.
    # Measured on one thread: a tapweight step costs 3.3 CPU-s (uniform: 1.4), a final
    # fine-tuning epoch about 21 CPU-s; with rendering and k-means, ~9 CPU-minutes in all.
    # Level II at 0.01, not the paper's 0.05: from random weights at 64 px the features' E|f|²
    # is ~450, and the BCE head's top curvature λ_max(E[σ'ff^T]) ≤ λ_max(E[ff^T])/4 ≈ 88
    # (`python -m bench curvature mol bbbp`: 707 for MSE's 2E[ff^T]) makes SGD with momentum
    # 0.9 unstable above 2·1.9/88 ≈ 0.043: at 0.05 level II's loss climbed from 0.69 to 4.0
    # and the validation loss to 5.7 in 100 BBBP steps, so u (and λ) carried no signal.
    "cpu": {
        "steps": 100, "log_every": 10, "finetune.lr": 0.01,
        "pretrain.batch_size": 32, "finetune.batch_size": 32, "reweight.batch_size": 32,
        "final.epochs": 8, "final.batch_size": 64,
        "mol.image_size": 64, "mol.mir_size": 32,
    },
    # The paper's ImageMol setting (TapWeight, TMLR 2025, §5): 224 px, batch 1024 / 64 / 64;
    # learning rates, γ and the step schedules are RunConfig's defaults (0.02, 0.05, 200;
    # γ = 1e-3; StepLR(100, 0.9) on all three levels); steps are each task's (PAPER_STEPS).
    # Each of the three streams (and the final fine-tune's loader) decodes its PNGs in 8 worker
    # processes: 1,024 images a step decoded in the main process would leave a GPU waiting.
    "paper": {
        "pretrain.batch_size": 1024, "finetune.batch_size": 64, "reweight.batch_size": 64,
        "final.batch_size": 64, "final.epochs": 30,
        "mol.image_size": 224, "mol.mir_size": 64, "num_workers": 8,
    },
}

#: ``tapweight pretrain mol`` lays these over the preset of the same name (base pretraining).
PRETRAIN_PRESETS = {
    # the cpu preset's 64-px images and batch 32, with one DataLoader worker drawing the next
    # batch's images while a step runs; 500 steps (16,000 molecules seen) take ~12 CPU-minutes
    "cpu": {"steps": 500, "num_workers": 1, "checkpoint_every": 100},
    # ImageMol's own pretraining (Zeng et al., 2022; its pretrain.py and README command): 224 px,
    # batch 256, SGD with momentum 0.9, rate 0.01 and weight decay 1e-5, constant, every
    # objective (MG-100/1000/10000, JPP, MCL, MRD, MIR) with weight 1. Our λ sum to 1, so
    # uniform λ = 1/7 with 7× the rate and 1/7 the decay takes exactly ImageMol's SGD steps.
    # ImageMol ran 151 epochs of 10 million PubChem molecules (≈ 5.6 M steps): give --steps.
    "paper": {
        "objectives": ["mg100", "mg1000", "mg10000", "jpp", "mcl", "mrd", "mir"],
        "mol.image_size": 224, "mol.mir_size": 64, "pretrain.batch_size": 256,
        "pretrain.optimizer": "sgd", "pretrain.momentum": 0.9, "pretrain.lr": 0.01 * 7,
        "pretrain.weight_decay": 1e-5 / 7, "pretrain.scheduler": "constant",
        "num_workers": 8, "checkpoint_every": 1000,
    },
}

#: the paper's global steps per data set (TapWeight, TMLR 2025, §5): MUV 30,000; HIV 20,000;
#: Tox21 and ToxCast 10,000; every other data set 3,000. They are the tasks' default steps.
PAPER_STEPS = {"muv": 30_000, "hiv": 20_000, "tox21": 10_000, "toxcast": 10_000}
DEFAULT_STEPS = 3_000

#: Regression (``mse``) tasks: SGD steps small enough for a squared loss on ResNet features.
#: The paper's 0.05 (level II) and the final fine-tune's 0.01 are classification rates. MSE
#: on a linear head over the features f has the Hessian 2·E[f fᵀ] whatever the targets' scale
#: (BCE: at most an eighth of that, and bounded gradients). On FreeSolv's training images
#: (64 px, random init, batch statistics) its top eigenvalue is about 710 (``python -m bench
#: curvature mol freesolv``), so SGD with momentum 0.9 is stable only below 2·1.9/710 ≈ 0.005:
#: at 0.05 the run stops with a NaN at step 5, at 0.01 the final fine-tune diverges in its
#: second epoch. 0.001 is the reference code's regression rate (molreweight/reweight_reg.sh:
#: --finetune_lr 0.001), five times below that bound.
#: They are the regression tasks' overrides: they hold over any preset.
REGRESSION_DEFAULTS = {"finetune.lr": 0.001, "final.lr": 0.001}
