"""The GNNs of Hu et al., "Strategies for Pre-training Graph Neural Networks" (ICLR 2020).

Node states start as ``x_embedding1(atom type) + x_embedding2(chirality)``. Each of the
``num_layers`` layers adds self-loops (bond type 4), adds ``edge_embedding1(bond type) +
edge_embedding2(bond direction)`` to every message, and is followed by batch norm; all but
the last are followed by ReLU ("JK last": the last layer's node states are the output). A
molecule's features are the mean of its node states.

The four layers (messages from atom j to atom i along each directed edge, self-loop included):

- ``gin``: h_i ← MLP(Σ_j (h_j + e_ji)), the MLP ``Linear(d, 2d), ReLU, Linear(2d, d)``;
- ``gcn``: h_i ← Σ_j (W h_j + b + e_ji) / √(deg_i · deg_j), degrees counted with the self-loop;
- ``graphsage``: h_i ← normalize₂(mean_j (W h_j + b + e_ji));
- ``gat``: 2 heads; z = W h + b split into heads, m_ji = z_j + e_ji, attention
  α_ji = softmax_j(LeakyReLU_0.2(a · [z_i ‖ m_ji])), h_i ← mean over heads of Σ_j α_ji m_ji,
  plus a bias.

Parameter names follow their released checkpoints (``x_embedding1.weight``,
``gnns.{i}.linear.weight``, ``gnns.{i}.edge_embedding1.weight``, ``batch_norms.{i}.running_mean``
...), so their ``.pth`` files load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tapweight_mol.graphs.featurize import (
    NUM_ATOM_TYPES,
    NUM_BOND_DIRS,
    NUM_BOND_TYPES,
    NUM_CHIRALITY,
    SELF_LOOP_BOND,
)
from tapweight_mol.graphs.pyg import MessagePassing, degree, global_mean_pool, softmax


class BondLayer(MessagePassing):
    """A message-passing layer whose messages carry bond embeddings, over self-loops too."""

    def __init__(self, aggr: str, bond_dim: int):
        super().__init__(aggr=aggr, node_dim=0)
        self.edge_embedding1 = nn.Embedding(NUM_BOND_TYPES, bond_dim)
        self.edge_embedding2 = nn.Embedding(NUM_BOND_DIRS, bond_dim)
        nn.init.xavier_uniform_(self.edge_embedding1.weight)
        nn.init.xavier_uniform_(self.edge_embedding2.weight)

    def with_self_loops(self, n: int, edge_index: torch.Tensor, edge_attr: torch.Tensor):
        """The edges with one self-loop per node, and every edge's bond embedding."""
        loops = torch.arange(n, device=edge_index.device)
        loop_attr = torch.zeros(n, 2, dtype=edge_attr.dtype, device=edge_attr.device)
        loop_attr[:, 0] = SELF_LOOP_BOND
        edge_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
        edge_attr = torch.cat([edge_attr, loop_attr], dim=0)
        return edge_index, self.edge_embedding1(edge_attr[:, 0]) + self.edge_embedding2(edge_attr[:, 1])

    def message(self, x_j: torch.Tensor, bond: torch.Tensor) -> torch.Tensor:
        return x_j + bond


class GINLayer(BondLayer):
    def __init__(self, emb_dim: int):
        super().__init__("add", emb_dim)
        self.mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim), nn.ReLU(), nn.Linear(2 * emb_dim, emb_dim))

    def forward(self, x, edge_index, edge_attr):
        edge_index, bond = self.with_self_loops(len(x), edge_index, edge_attr)
        return self.mlp(self.propagate(edge_index, x=x, bond=bond))


class GCNLayer(BondLayer):
    def __init__(self, emb_dim: int):
        super().__init__("add", emb_dim)
        self.linear = nn.Linear(emb_dim, emb_dim)

    def forward(self, x, edge_index, edge_attr):
        edge_index, bond = self.with_self_loops(len(x), edge_index, edge_attr)
        scale = degree(edge_index[1], len(x), dtype=x.dtype).rsqrt()
        norm = scale[edge_index[0]] * scale[edge_index[1]]
        return self.propagate(edge_index, x=self.linear(x), bond=bond, norm=norm)

    def message(self, x_j, bond, norm):
        return norm.unsqueeze(-1) * (x_j + bond)


class GraphSAGELayer(BondLayer):
    def __init__(self, emb_dim: int):
        super().__init__("mean", emb_dim)
        self.linear = nn.Linear(emb_dim, emb_dim)

    def forward(self, x, edge_index, edge_attr):
        edge_index, bond = self.with_self_loops(len(x), edge_index, edge_attr)
        return F.normalize(self.propagate(edge_index, x=self.linear(x), bond=bond), p=2, dim=-1)


class GATLayer(BondLayer):
    def __init__(self, emb_dim: int, heads: int = 2, negative_slope: float = 0.2):
        super().__init__("add", heads * emb_dim)
        self.heads, self.emb_dim, self.negative_slope = heads, emb_dim, negative_slope
        self.weight_linear = nn.Linear(emb_dim, heads * emb_dim)
        self.att = nn.Parameter(torch.empty(1, heads, 2 * emb_dim))
        self.bias = nn.Parameter(torch.zeros(emb_dim))
        nn.init.xavier_uniform_(self.att)

    def forward(self, x, edge_index, edge_attr):
        edge_index, bond = self.with_self_loops(len(x), edge_index, edge_attr)
        z = self.weight_linear(x).view(-1, self.heads, self.emb_dim)
        return self.propagate(edge_index, x=z, bond=bond).mean(dim=1) + self.bias

    def message(self, x_i, x_j, bond, index, ptr, size_i):
        m = x_j + bond.view(-1, self.heads, self.emb_dim)  # [E, heads, d]
        score = F.leaky_relu((torch.cat([x_i, m], dim=-1) * self.att).sum(-1), self.negative_slope)
        return m * softmax(score, index, ptr, size_i).unsqueeze(-1)


LAYERS = {"gin": GINLayer, "gcn": GCNLayer, "graphsage": GraphSAGELayer, "gat": GATLayer}


class GNN(nn.Module):
    """Hu et al.'s GNN: atoms' node states and mean-pooled molecule features ``[B, emb_dim]``."""

    def __init__(self, kind: str = "gin", num_layers: int = 5, emb_dim: int = 300, dropout: float = 0.0):
        super().__init__()
        if kind not in LAYERS:
            raise ValueError(f"unknown GNN kind {kind!r} (kinds: {', '.join(LAYERS)})")
        self.kind, self.dropout, self.out_dim = kind, dropout, emb_dim
        self.x_embedding1 = nn.Embedding(NUM_ATOM_TYPES, emb_dim)
        self.x_embedding2 = nn.Embedding(NUM_CHIRALITY, emb_dim)
        nn.init.xavier_uniform_(self.x_embedding1.weight)
        nn.init.xavier_uniform_(self.x_embedding2.weight)
        self.gnns = nn.ModuleList(LAYERS[kind](emb_dim) for _ in range(num_layers))
        self.batch_norms = nn.ModuleList(nn.BatchNorm1d(emb_dim) for _ in range(num_layers))

    def node_states(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """Atoms ``x`` [N, 2], directed bonds ``edge_index`` [2, E] and ``edge_attr`` [E, 2] →
        the last layer's node states ``[N, emb_dim]``."""
        h = self.x_embedding1(x[:, 0]) + self.x_embedding2(x[:, 1])
        last = len(self.gnns) - 1
        for i, (layer, norm) in enumerate(zip(self.gnns, self.batch_norms, strict=True)):
            h = norm(layer(h, edge_index, edge_attr))
            if i < last:
                h = F.relu(h)
            h = F.dropout(h, self.dropout, self.training)
        return h

    def forward(self, graph) -> torch.Tensor:
        """A ``torch_geometric.data.Batch`` of B molecules → their features ``[B, emb_dim]``."""
        h = self.node_states(graph.x, graph.edge_index, graph.edge_attr)
        return global_mean_pool(h, graph.batch, size=graph.num_graphs)
