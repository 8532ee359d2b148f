"""Node-level pretraining objectives of Hu et al. (ICLR 2020), "Strategies for Pre-training
Graph Neural Networks", for the graph backbones (gnn.py).

Each is an ``nn.Module`` whose ``forward(backbone, batch)`` returns one unweighted loss;
``batch`` is a corpus batch ``{"graph": torch_geometric.data.Batch, "index": [B]}`` and the
backbone gives node states through ``backbone.node_states(x, edge_index, edge_attr)``.

- ``mol.attrmask`` attribute masking: a random 15 % of each molecule's atoms (``int(0.15·n) + 1``
  of its ``n``, as their masking transform draws) become the mask token; a linear head on
  the node states names their atom types (cross-entropy over the 119 types).
- ``mol.contextpred`` context prediction: a centre atom's K-hop neighbourhood (the
  substructure, K = the backbone's layers) is encoded by the backbone, its context ring
  (atoms between r1 = K − 1 and r2 = r1 + 3 hops) by a separate, smaller context GNN; the
  dot product of the centre's state and the mean state of the context anchors (context
  atoms within K hops, their "cbow" mode) is classified as a true pair, and as a false one
  against the next molecule's context (one negative each, the batch shifted by one).
- ``mol.edgepred`` edge prediction (Hu et al.'s baseline, after Hamilton et al., NeurIPS
  2017): the dot product of two atoms' states tells bonded pairs (every bond once) from as
  many random non-bonded pairs of distinct atoms of the same molecule.

Random draws come from torch's global generator, which the engine replays
(`tapweight_mol.graphs.draws`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tapweight import computed_once
from tapweight_mol.graphs.draws import (
    choose,
    fraction,
    graph_sizes,
    hops_from,
    induced,
    random_members,
)
from tapweight_mol.graphs.featurize import MASK_ATOM, NUM_ATOM_TYPES
from tapweight_mol.graphs.pyg import scatter

N_ATOM_CLASSES = NUM_ATOM_TYPES - 1  # every atom type but the mask token


def clean_node_states(backbone: nn.Module, graph) -> torch.Tensor:
    """The backbone's node states of the unaltered batch ``[N, emb_dim]``, computed once per
    evaluation of θ's losses and shared by the objectives that read them."""
    return computed_once("mol.graph_node_states",
                         lambda: backbone.node_states(graph.x, graph.edge_index, graph.edge_attr))


def mask_atoms(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``x`` with the ``chosen`` atoms replaced by the mask token (type MASK_ATOM, chirality 0)."""
    token = torch.tensor([MASK_ATOM, 0], dtype=x.dtype, device=x.device)
    return torch.where(chosen[:, None], token, x)


def pair_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of true pairs' logits (label 1) plus that of false pairs'
    (label 0); a side without pairs adds 0 (still a function of θ, so gradients exist)."""
    return sum(F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label),
                                                  reduction="sum") / max(logits.numel(), 1)
               for logits, label in ((positive, 1.0), (negative, 0.0)))


class AttributeMasking(nn.Module):
    """Attribute masking: cross-entropy of the masked atoms' types from their node states."""

    def __init__(self, emb_dim: int, mask_rate: float = 0.15):
        super().__init__()
        self.mask_rate = mask_rate
        self.classifier = nn.Linear(emb_dim, N_ATOM_CLASSES)

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        graph = batch["graph"]
        sizes = graph_sizes(graph.batch, graph.num_graphs)
        counts = torch.minimum(fraction(sizes, self.mask_rate) + 1, sizes)
        masked = choose(graph.batch, graph.num_graphs, counts)
        states = backbone.node_states(mask_atoms(graph.x, masked), graph.edge_index, graph.edge_attr)
        return F.cross_entropy(self.classifier(states[masked]).float(), graph.x[masked, 0])


def negative_pairs(graph) -> torch.Tensor:
    """Per molecule, as many ordered pairs of distinct, non-bonded atoms as it has bonds:
    5 × bonds candidates drawn uniformly, the first valid, unrepeated ones kept (their
    negative-edge transform; a small molecule may give fewer). ``[2, n_pairs]``."""
    n, b = graph.num_nodes, graph.num_graphs
    ptr, device = graph.ptr, graph.x.device
    src, dst = graph.edge_index
    bonds = graph_sizes(graph.batch[src[src < dst]], b)
    owner = torch.repeat_interleave(torch.arange(b, device=device), 5 * bonds)  # candidate's graph
    sizes = (ptr[1:] - ptr[:-1])[owner]
    pick = (torch.rand(2, len(owner), device=device) * sizes).long()
    pick = ptr[owner] + torch.minimum(pick, sizes - 1)
    code = pick[0] * n + pick[1]
    first = torch.zeros(len(code), dtype=torch.bool, device=device)
    order = torch.argsort(code, stable=True)
    sorted_code = code[order]
    first[order] = torch.cat([sorted_code.new_ones(min(len(code), 1), dtype=torch.bool),
                              sorted_code[1:] != sorted_code[:-1]])
    valid = first & (pick[0] != pick[1]) & ~torch.isin(code, src * n + dst)
    kept = torch.cumsum(torch.cat([valid.new_zeros(1), valid]).long(), 0)  # valid ones before each
    first_candidate = torch.cumsum(5 * bonds, 0) - 5 * bonds
    rank = kept[1:] - kept[first_candidate][owner]  # 1, 2, ... among its graph's valid ones
    return pick[:, valid & (rank <= bonds[owner])]


class EdgePrediction(nn.Module):
    """Edge prediction: binary cross-entropy of ``h_u · h_v`` on bonds (1) and non-bonds (0)."""

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        graph = batch["graph"]
        states = clean_node_states(backbone, graph).float()
        src, dst = graph.edge_index
        bonded = torch.stack([src[src < dst], dst[src < dst]])  # every bond once
        unbonded = negative_pairs(graph)
        positive = (states[bonded[0]] * states[bonded[1]]).sum(1)
        negative = (states[unbonded[0]] * states[unbonded[1]]).sum(1)
        return pair_loss(positive, negative)


class ContextPrediction(nn.Module):
    """Context prediction ("cbow"): the centre of a K-hop substructure against its context.

    ``context_gnn`` (a GNN with ``node_states``, e.g. a 3-layer GNN of the backbone's kind) is
    this objective's own module, so it trains with θ as the objective's head. Molecules with
    no atom beyond r1 hops of their centre have no context and drop out of the batch, as in
    Hu et al.'s loader; a batch whose contexts hold fewer than two atoms in all (batch norm
    needs two) gives the loss 0 for that step.
    """

    def __init__(self, context_gnn: nn.Module, k: int = 5, r1: int = 4, r2: int = 7):
        super().__init__()
        if not 0 <= r1 < k <= r2:
            raise ValueError(f"context prediction needs 0 <= r1 < K <= r2, got K={k}, r1={r1}, r2={r2}")
        self.context_gnn, self.k, self.r1, self.r2 = context_gnn, k, r1, r2

    def regions(self, graph, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks over the batch's atoms: the substructure (≤ K hops of its molecule's centre),
        the context (r1 < hops ≤ r2) and the context anchors (r1 < hops ≤ K)."""
        hops = hops_from(centres, graph.edge_index, graph.num_nodes, self.r2)
        beyond = hops > self.r1
        return hops <= self.k, beyond & (hops <= self.r2), beyond & (hops <= self.k)

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        graph = batch["graph"]
        centres = random_members(graph.batch, graph.ptr)
        substructure, context, anchors = self.regions(graph, centres)
        x, edge_index, edge_attr, new_id = induced(graph.x, graph.edge_index, graph.edge_attr,
                                                   substructure)
        centre_states = backbone.node_states(x, edge_index, edge_attr)[new_id[centres]]
        x, edge_index, edge_attr, new_id = induced(graph.x, graph.edge_index, graph.edge_attr,
                                                   context)
        if len(x) < 2:  # the context GNN's batch norm cannot train on one atom: no pair this step
            none = centre_states[:0].float().sum(1)
            return pair_loss(none, none)
        anchor_states = self.context_gnn.node_states(x, edge_index, edge_attr)[new_id[anchors]]
        contexts = scatter(anchor_states, graph.batch[anchors], 0, graph.num_graphs, reduce="mean")
        has_context = graph_sizes(graph.batch[anchors], graph.num_graphs) > 0
        centre_states = centre_states[has_context].float()
        contexts = contexts[has_context].float()
        positive = (centre_states * contexts).sum(1)
        negative = (centre_states * contexts.roll(-1, 0)).sum(1)  # the next molecule's context
        return pair_loss(positive, negative)


def build_context_prediction(backbone: nn.Module) -> ContextPrediction:
    """Hu et al.'s setting for a backbone of K layers: r1 = K − 1, r2 = r1 + 3, and a context
    GNN of r2 − r1 = 3 layers of the backbone's kind, width and dropout."""
    from tapweight_mol.graphs.gnn import GNN

    k = len(backbone.gnns)
    r1, r2 = k - 1, k + 2
    return ContextPrediction(GNN(backbone.kind, r2 - r1, backbone.out_dim, backbone.dropout), k, r1, r2)
