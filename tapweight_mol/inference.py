"""A finished molecular run's model outside training: new SMILES to score, exports.

``tapweight predict`` reads SMILES from a CSV (the task's SMILES column, e.g. ``smiles`` or
BACE's ``mol``, or any column named ``smiles`` in any case; ``.tsv``: tab-separated) or a
SMILES file (``.smi``, ``.txt``: the first field of each line, an optional ``smiles``
header). Each molecule is drawn as in training, at the run's ``mol.image_size`` (images
come from the image cache when they are there). A SMILES RDKit cannot parse is not scored.

With a GNN backbone (``mol.gcn``...) molecules become graphs as in training, and ``tapweight
export --format hu2020`` writes the GNN in Hu et al.'s layout (graphs/loading.py).

``tapweight export`` writes the ResNet18 in two formats:

- ``torchvision``: ``resnet18.pth``, a state dict for ``torchvision.models.resnet18()``.
  The encoder alone has no ``fc``: set ``model.fc = torch.nn.Identity()`` and the model gives
  the 512-d features. A fine-tuned export with the ``core.linear`` head carries it as
  ``fc``: ``resnet18(num_classes=outputs)`` loads it whole and gives the task's logits
  (a sigmoid gives probabilities for a binary task), or for a regression task the values in
  the targets' units (the target scaler is folded into ``fc``). Either way the inputs are RGB images
  in [0, 1] normalised with ImageNet's mean and std
  (``torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))``), as
  ImageMol's data loaders do; tapweight's backbone applies that normalisation itself.
- ``imagemol``: ``ImageMol.pth.tar`` in the layout of ImageMol's ``pretrain.py``,
  ``{"arch": "ResNet18", "state_dict": {"embedding_layer.<i>.*": ...}}`` (``i`` numbers the
  ResNet's children), the 120 tensors in torchvision's order, in the pre-zip torch format
  that ImageMol's torch 1.4 reads: ImageMol's ``finetune.py --resume`` (which copies the first
  120 tensors by position) and tapweight's ``--init`` load it. The layout has no task head.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from tapweight import Inputs, Predictor, TapweightError
from tapweight_mol.backbone import RESNET_CHILDREN, ImageMolResNet18
from tapweight_mol.corpus import SmilesList
from tapweight_mol.data import TaskImages, inputs
from tapweight_mol.graphs import is_graph_backbone
from tapweight_mol.moleculenet import SETS
from tapweight_mol.options import MolOptions
from tapweight_mol.render import canonical, parallel_map, quiet_rdkit

log = logging.getLogger(__name__)

TORCHVISION_FILE = "resnet18.pth"
SCALER_FILE = "target_scaler.json"  # a regression run's targets' mean and std, beside predictor/
IMAGEMOL_FILE = "ImageMol.pth.tar"


def raw_smiles(path: str, column: str) -> list[str]:
    """The SMILES of a CSV's ``column`` (or its ``smiles`` column) or of a SMILES file, one per
    data line: a blank line is an empty SMILES, so that row numbers stay the file's lines."""
    file = Path(path)
    if ".csv" in file.suffixes or ".tsv" in file.suffixes:
        try:
            frame = pd.read_csv(file, sep="\t" if ".tsv" in file.suffixes else ",", dtype=str,
                                keep_default_na=False, skip_blank_lines=False)
        except (ValueError, OSError, pd.errors.ParserError) as err:
            reason = " ".join(str(err).split())[:100] or type(err).__name__
            raise TapweightError(f"cannot read '{path}' as CSV ({reason})") from None
        found = column if column in frame.columns else next(
            (c for c in frame.columns if str(c).lower() == "smiles"), None)
        if found is None:
            named = f"'{column}' or 'smiles'" if column.lower() != "smiles" else f"'{column}'"
            raise TapweightError(f"'{path}' has no SMILES column {named} (columns: "
                                 f"{', '.join(map(str, frame.columns[:8]))}): rename its SMILES column "
                                 f"to 'smiles'")
        return frame[found].tolist()
    try:
        lines = [(line.split() or [""])[0] for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise TapweightError(f"'{path}' is neither a CSV nor a SMILES file (one per line)") from None
    return lines[1:] if lines and lines[0].lower() == "smiles" else lines


def read_smiles(path: str, column: str, workers: int) -> Inputs:
    """SMILES to score, one row per data line; an empty SMILES (a blank line, an empty cell) or
    one RDKit cannot parse is an invalid row."""
    raw = raw_smiles(path, column)
    quiet_rdkit()
    canon = parallel_map(canonical, raw, workers, chunksize=1024, inline_below=20_000)
    errors = ["" if c is not None else ("empty SMILES" if not str(s).strip() else "RDKit cannot parse this SMILES")
              for s, c in zip(raw, canon)]
    return Inputs(raw, errors, source=str(path))


def smiles_predictor(cfg) -> Predictor:
    """Molecules prepared as the run's: drawn at its image size, or featurized as graphs for
    a GNN backbone. Nothing is fitted, so nothing is saved: the config says it all."""
    o = cfg.options
    # a MoleculeNet set's own column unless mol.smiles_column (or predict --smiles-column) names one
    column = SETS[cfg.task].smiles if cfg.task in SETS and o.smiles_column == MolOptions.smiles_column \
        else o.smiles_column
    made = inputs(cfg)

    def dataset(smiles: list) -> TaskImages:
        canon = SmilesList.of(canonical(s) for s in smiles)
        return TaskImages(canon, np.full((len(canon), 1), np.nan), made.of)

    backbone = ImageMolResNet18
    if is_graph_backbone(cfg.backbone):
        from tapweight_mol.graphs.loading import new_gnn

        backbone = partial(new_gnn, cfg)
    return Predictor(read=lambda path: read_smiles(path, column, o.render_workers), dataset=dataset,
                     collate=made.task_collate, backbone=backbone)


def load_predictor(cfg, folder: Path) -> Predictor:
    """``Domain.load_predictor``."""
    return smiles_predictor(cfg)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def resnet_only(backbone: nn.Module, format: str) -> None:
    if not isinstance(backbone, ImageMolResNet18):
        raise TapweightError(f"--format {format} writes a ResNet18 and this run's backbone is a "
                             f"{type(backbone).__name__}: use --format hu2020")


def write_torchvision(backbone: ImageMolResNet18, head: nn.Module | None, folder: Path, out: Path) -> list[Path]:
    """``ExportFormat.write`` of ``torchvision``: a ``resnet18()`` state dict (the head as ``fc``)."""
    resnet_only(backbone, "torchvision")
    state = _cpu(backbone.state_dict())
    if head is not None:
        if not isinstance(head, nn.Linear):
            raise TapweightError(f"torchvision's resnet18 ends in one linear fc, and this run's head is a "
                                 f"{type(head).__name__}: export the encoder alone (without --finetuned)")
        fc = _cpu(head.state_dict())
        scaler = folder.parent / SCALER_FILE  # regression: fc gives values in the targets' units
        if scaler.is_file():
            numbers = json.loads(scaler.read_text())
            std, mean = (torch.tensor(numbers[k], dtype=torch.float64) for k in ("std", "mean"))
            fc = {"weight": (fc["weight"].double() * std[:, None]).float(),
                  "bias": (fc["bias"].double() * std + mean).float()}
        state.update({f"fc.{k}": v for k, v in fc.items()})
    torch.save(state, out / TORCHVISION_FILE)
    return [out / TORCHVISION_FILE]


def write_imagemol(backbone: ImageMolResNet18, head: nn.Module | None, folder: Path, out: Path) -> list[Path]:
    """``ExportFormat.write`` of ``imagemol``: ImageMol's pretraining layout (no task head)."""
    resnet_only(backbone, "imagemol")
    state = {}
    for key, value in _cpu(backbone.state_dict()).items():  # torchvision's order, kept
        child, rest = key.split(".", 1)
        state[f"embedding_layer.{RESNET_CHILDREN.index(child)}.{rest}"] = value
    if head is not None:
        log.info("the task head is not written: ImageMol's pretraining layout has none (the "
                 "torchvision format keeps it as fc)")
    torch.save({"arch": "ResNet18", "state_dict": state}, out / IMAGEMOL_FILE,
               _use_new_zipfile_serialization=False)
    return [out / IMAGEMOL_FILE]
