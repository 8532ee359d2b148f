"""Building a GNN backbone and loading ``--init`` into it.

``--init`` accepts, each read with ``weights_only=True`` onto the CPU and copied into the
backbone (which the run then moves to its device):

- a GNN state dict of Hu et al.'s released layout (their ``model_architecture/*.pth``:
  ``x_embedding1/2``, ``gnns.{i}.*``, ``batch_norms.{i}.*``), optionally under ``state_dict``
  or with DataParallel's ``module.`` prefix;
- their fine-tuned model (``finetune.py``'s ``GNN_graphpred``): the GNN under ``gnn.*``, its
  task head ``graph_pred_linear`` not used;
- a tapweight checkpoint: the backbone under ``backbone.*``.

Loading is strict (``mol.strict_load``): a file of another layout is refused with one line
naming the tensors that did not fit, and the run log says what loaded
(`tapweight.load_into`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from tapweight import LoadReport, TapweightError, container, load_into, read_weights
from tapweight_mol.backbone import unwrap
from tapweight_mol.graphs import BACKBONES
from tapweight_mol.graphs.gnn import GNN

log = logging.getLogger(__name__)

#: a parameter name only one GNN kind has (GCN and GraphSAGE share theirs)
SIGNATURES = {".mlp.": "gin", ".weight_linear.": "gat", ".linear.": "gcn or graphsage"}


def layout(state: dict[str, torch.Tensor]) -> str:
    """Which of Hu et al.'s layouts ``state`` has, from its parameter names."""
    if not any(k.startswith("x_embedding1") for k in state):
        return "not Hu et al.'s GNN layout"
    kind = next((kind for mark, kind in SIGNATURES.items() if any(mark in k for k in state)), "unknown")
    layers = {k.split(".")[1] for k in state if k.startswith("gnns.")}
    return f"Hu et al.'s {kind} layout, {len(layers)} layers"


def gnn_state(checkpoint: dict) -> tuple[dict[str, torch.Tensor], str, str]:
    """The GNN's tensors of a checkpoint, the format's name, and why the rest is not used."""
    state, notes = unwrap(checkpoint)
    if any(k.startswith("backbone.") for k in state):
        return ({k.removeprefix("backbone."): v for k, v in state.items()},
                ", ".join(["tapweight", *notes]), "tapweight's objective and task heads")
    if any(k.startswith("gnn.") for k in state):
        state = {k.removeprefix("gnn."): v for k, v in state.items()}
        return state, ", ".join([f"fine-tuned GNN_graphpred, {layout(state)}", *notes]), "their task head"
    return state, ", ".join([f"GNN state dict, {layout(state)}", *notes]), ""


def load_init(model: GNN, name: str, init: str, strict: bool = True) -> LoadReport:
    """Load ``init`` into the backbone ``name`` (strict unless told otherwise), logged."""
    state, fmt, dropped = gnn_state(read_weights(init))
    return load_into(model, state, target=f"backbone {name}", source=f"--init '{init}'",
                     format=f"{fmt}, {container(Path(init).expanduser())}", strict=strict,
                     option="mol.strict_load", dropped=dropped,
                     fix=f"a {model.kind} checkpoint of Hu et al.'s layout ({len(model.gnns)} layers, "
                         f"{model.out_dim} dims) or a tapweight checkpoint of {name}")


def new_gnn(cfg) -> GNN:
    """A randomly initialised GNN of the run's backbone (``cfg.backbone``) and sizes."""
    o = cfg.options
    name = cfg.backbone if cfg.backbone in BACKBONES else f"mol.{cfg.backbone}"
    return GNN(BACKBONES[name], o.gnn_layers, o.gnn_dim, o.gnn_dropout)


def build(name: str, cfg) -> GNN:
    """``BackboneSpec.build`` of the GNN backbone ``name``: from ``cfg.init`` or random."""
    model = new_gnn(cfg)
    if cfg.init:
        load_init(model, name, cfg.init, cfg.options.strict_load)
    else:
        log.warning("backbone %s starts from random weights (no --init): for a pretrained start pass "
                    "one of Hu et al.'s released %s checkpoints (github snap-stanford/pretrain-gnns, "
                    "chem/model_architecture), e.g. --init %s_contextpred.pth", name, model.kind, model.kind)
    return model


HU2020_FILE = "gnn.pth"


def write_hu2020(backbone: GNN, head: nn.Module | None, folder: Path, out: Path) -> list[Path]:
    """``ExportFormat.write`` of ``hu2020``: the GNN's state dict in Hu et al.'s layout, which
    their ``GNN.load_state_dict`` and ``--init`` load; fine-tuned, their ``GNN_graphpred``
    layout (``gnn.*`` and the linear head as ``graph_pred_linear.*``)."""
    if not isinstance(backbone, GNN):
        raise TapweightError(f"--format hu2020 writes a GNN and this run's backbone is a "
                             f"{type(backbone).__name__}: use --format torchvision or imagemol")
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    if head is not None:
        if not isinstance(head, nn.Linear):
            raise TapweightError(f"GNN_graphpred ends in one linear graph_pred_linear, and this run's head "
                                 f"is a {type(head).__name__}: export the encoder alone (without --finetuned)")
        state = {**{f"gnn.{k}": v for k, v in state.items()},
                 **{f"graph_pred_linear.{k}": v.detach().cpu().clone() for k, v in head.state_dict().items()}}
    torch.save(state, out / HU2020_FILE)
    return [out / HU2020_FILE]
