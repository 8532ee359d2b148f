"""The ``tabular`` domain's options (``--set tabular.<field>=...``) and its presets.

Defaults follow SCARF (Bahri et al., ICLR 2022, §4): a ReLU MLP of 256 hidden units,
corruption rate 0.6 and InfoNCE temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapweight import check_options, check_task_type, setting


@dataclass
class TabularOptions:
    """Options of the ``tabular`` domain, set as ``--set tabular.<field>=value``."""

    hidden: int = setting(256, "hidden units per layer (SCARF: 256)")
    layers: int = setting(3, "hidden layers of the backbone; SCARF's encoder has 4 linear layers")
    out_dim: int = setting(64, "feature size the task head sees")
    dropout: float = setting(0.0, "dropout after each hidden layer of the backbone")
    mfr_mask_rate: float = setting(
        0.3, "fraction of features masked by tabular.mfr (VIME's p_m = 0.3)")
    denoise_sigma: float = setting(
        0.5, "std of the Gaussian noise of tabular.denoise (standardized units)")
    scarf_corruption: float = setting(0.6, "fraction c of features SCARF resamples (paper: 0.6)")
    scarf_temperature: float = setting(1.0, "InfoNCE temperature τ (paper: 1.0)")
    label_column: str = setting(
        "label", "custom task: the label column; every other column is a feature")
    task_type: str = setting(
        "auto", "custom task: auto | classification | regression (auto: labels')")
    classes: list[str] = setting([], "custom task: class names; empty: labels'")
    metric: str = setting(
        "", "custom task: the selection metric; empty: accuracy (classes) or rmse")
    name: str = setting(
        "", "custom task: the run's name in folders and tables; empty: the data file's")

    def __post_init__(self):
        check_options("tabular", self, {
            "hidden": ">= 1", "layers": ">= 0", "out_dim": ">= 1", "dropout": "in [0, 1)",
            "mfr_mask_rate": "in (0, 1]", "denoise_sigma": ">= 0", "scarf_corruption": "in (0, 1]",
            "scarf_temperature": "> 0"})
        check_task_type(self.task_type, "tabular.task_type")


#: Dotted overrides per preset. ``cpu`` runs a task end to end in seconds on a laptop;
#: ``paper`` is a full-length run for a GPU. Both take Adam's inner steps as SGD steps in the
#: hypergradient (``reweight.preconditioner=identity``): with the exact Adam derivative an
#: objective fitting random labels kept its weight (final λ 0.12–0.44 from 0.25, breast-cancer,
#: 300 steps, 5 seeds), with identity TapWeight drove it down (0.04–0.16; digits 0.02–0.04).
#: Level II has weight decay 0.01: without it w overfits its training batches, its
#: validation predictions grow overconfident, and the hypergradient then rewards any objective
#: that shrinks the features (``core.feature_collapse`` took most of λ in 4 of 10 runs; with
#: the decay in none at 300 steps). docs/known-answer.md has the measurements.
PRESETS = {
    "cpu": {
        "steps": 100,
        "log_every": 20,
        "tabular.hidden": 128,
        "tabular.layers": 2,
        "pretrain.optimizer": "adam", "pretrain.lr": 1e-3, "pretrain.weight_decay": 0.0,
        "pretrain.scheduler": "constant", "pretrain.batch_size": 128,
        "finetune.optimizer": "adam", "finetune.lr": 1e-3, "finetune.weight_decay": 1e-2,
        "finetune.scheduler": "constant", "finetune.batch_size": 64, "finetune.gamma": 1e-3,
        "reweight.optimizer": "adam", "reweight.lr": 0.05, "reweight.scheduler": "constant",
        "reweight.batch_size": 64, "reweight.preconditioner": "identity",
        "final.optimizer": "adam", "final.lr": 1e-3, "final.weight_decay": 0.0,
        "final.scheduler": "constant", "final.batch_size": 64, "final.epochs": 20,
    },
    "paper": {
        "steps": 3000,
        "log_every": 50,
        "pretrain.optimizer": "adam", "pretrain.lr": 1e-3, "pretrain.weight_decay": 0.0,
        "pretrain.scheduler": "cosine", "pretrain.warmup_steps": 100, "pretrain.batch_size": 256,
        "finetune.optimizer": "adam", "finetune.lr": 1e-3, "finetune.weight_decay": 1e-2,
        "finetune.scheduler": "cosine", "finetune.batch_size": 128, "finetune.gamma": 1e-3,
        "reweight.optimizer": "adam", "reweight.lr": 0.05, "reweight.scheduler": "constant",
        "reweight.batch_size": 128, "reweight.preconditioner": "identity",
        "final.optimizer": "adam", "final.lr": 1e-3, "final.weight_decay": 1e-5,
        "final.scheduler": "cosine", "final.batch_size": 128, "final.epochs": 100,
        "final.patience": 20,
    },
}
