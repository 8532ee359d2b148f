"""A seed's final model on disk, as ``tapweight predict`` and ``tapweight export`` read it.

After the final fine-tune the runner writes into each seed folder, beside the run's
``config.yaml``::

    model.safetensors   the fine-tuned model (``backbone.*`` and ``head.*``) of the epoch with
                        the best validation metric: the model the test metric scored
    model.json          what it predicts: task, loss, label names, class names, outputs, head
    predictor/          the domain's preparation of inputs (``Predictor.save``: a tokenizer,
                        a feature scaler; empty when the config says it all)
    target_scaler.json  regression only (`tapweight.method.targets`): outputs × std + mean

With the config they rebuild the model without the training data: the backbone's
architecture comes from the domain's ``load_predictor``, the head from the registry, and
the weights are loaded strictly. The continued-pretrained encoder (``backbone.safetensors``,
method ≠ ``none``) loads into the same architecture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from safetensors.torch import load_file

from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.job import resolved
from tapweight.job.checkpoint import save_weights
from tapweight.job.loading import load_into
from tapweight.job.report import write_json
from tapweight.method.models import TaskModel
from tapweight.method.targets import SCALER_FILE, TargetScaler
from tapweight.plugin.specs import Predictor

MODEL_FILE = "model.safetensors"
MODEL_INFO = "model.json"
PREDICTOR_DIR = "predictor"
BACKBONE_FILE = "backbone.safetensors"


def save_final(folder: Path, model: TaskModel, job, label_names, predictor: Predictor | None) -> None:
    """Write a seed's final model, what it predicts and the domain's predictor into ``folder``."""
    cfg, task = job.cfg, job.task
    save_weights(model, folder / MODEL_FILE)
    n_outputs = task.n_classes if task.loss == "ce" else len(label_names)
    write_json({"domain": cfg.domain, "task": cfg.task, "loss": task.loss, "metric": task.metric,
                "label_names": list(label_names), "classes": list(task.classes),
                "n_outputs": n_outputs, "head": resolved.head_name(cfg, job.domain),
                "backbone": resolved.backbone_name(cfg, job.domain)}, folder / MODEL_INFO)
    if predictor is not None:
        (folder / PREDICTOR_DIR).mkdir(exist_ok=True)
        predictor.save(folder / PREDICTOR_DIR)


def run_seeds(cfg: RunConfig) -> list[int]:
    return list(cfg.seeds) or [cfg.seed]


def seeds_with_model(job, folder: Path) -> list[int]:
    """The run's seeds whose final model is saved."""
    return [s for s in run_seeds(job.cfg) if (Path(folder) / f"seed{s}" / MODEL_FILE).is_file()]


def pick_seeds(job, folder: Path, seed: int | None) -> list[int]:
    """``[seed]`` when given (checked), else every seed with a saved model."""
    have = seeds_with_model(job, folder)
    if seed is not None:
        if seed not in have:
            why = ("it is not one of the run's seeds" if seed not in run_seeds(job.cfg)
                   else "it has no saved model yet")
            raise TapweightError(f"--seed {seed}: {why} (seeds with a model: "
                                 f"{', '.join(map(str, have)) or 'none'})")
        return [seed]
    if not have:
        raise TapweightError(f"no seed of '{folder}' has a saved final model ({MODEL_FILE}): finish the "
                             "run with `tapweight resume`; runs made before tapweight saved models "
                             "must be run again")
    return have


@dataclass
class SavedModel:
    """A seed's final model, loaded: the model, its description, the domain's predictor and
    (regression) the target scaler."""

    cfg: RunConfig
    info: dict
    predictor: Predictor
    model: TaskModel
    scaler: TargetScaler | None


def load_predictor(job, cfg: RunConfig, folder: Path) -> Predictor:
    """The domain's predictor of a seed folder (one line if the domain has none)."""
    if job.domain.load_predictor is None:
        raise TapweightError(f"domain '{job.domain.name}' cannot score new inputs: its plugin gives "
                             "no load_predictor (docs/hooks.md)")
    return job.domain.load_predictor(cfg, folder / PREDICTOR_DIR)


def load_weights(module, file: Path, target: str) -> None:
    """Load ``file`` (safetensors) into ``module`` strictly; a mismatch is one line."""
    load_into(module, load_file(str(file)), target=target, source=f"'{file}'", format="safetensors",
              fix="the files of one run folder, unedited")


def load_final(job, run_folder: Path, seed: int) -> SavedModel:
    """Rebuild seed ``seed``'s fine-tuned model of the run in ``run_folder``."""
    folder = Path(run_folder) / f"seed{seed}"
    cfg = replace(job.cfg, seed=seed)
    info = json.loads((folder / MODEL_INFO).read_text())
    predictor = load_predictor(job, cfg, folder)
    backbone = predictor.backbone()
    head = job.registry.get("heads", info["head"], job.domain.name).build(backbone.out_dim, info["n_outputs"], cfg)
    model = TaskModel(backbone, head)
    load_weights(model, folder / MODEL_FILE, f"the final model of seed {seed}")
    scaler = TargetScaler.load(folder / SCALER_FILE) if info["loss"] == "mse" else None
    return SavedModel(cfg, info, predictor, model, scaler)
