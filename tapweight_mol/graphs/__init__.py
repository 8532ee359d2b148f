"""Molecules as graphs: Hu et al.'s featurization (featurize.py), their GNN layouts (gnn.py),
the graph data pipeline (data.py) and the checkpoint loader (loading.py).

This module imports neither torch nor RDKit: the plugin reads `BACKBONES` to register
the graph backbones and to tell graph runs from image runs.
"""

from __future__ import annotations

#: registered backbone name → the GNN kind of Hu et al. (ICLR 2020), "Strategies for
#: Pre-training Graph Neural Networks"
BACKBONES = {"mol.gin": "gin", "mol.gcn": "gcn", "mol.graphsage": "graphsage", "mol.gat": "gat"}


def is_graph_backbone(name: str) -> bool:
    """Whether the backbone ``name`` (registered or short, e.g. ``gcn``) reads graphs."""
    return name in BACKBONES or f"mol.{name}" in BACKBONES
