"""``mol.graphcl``: graph contrastive learning with augmentations (You et al., NeurIPS 2020,
"Graph Contrastive Learning with Augmentations").

Each molecule of the batch gives two views; each view applies one augmentation drawn
uniformly per molecule from the paper's four, each at its default ratio of 20 %:

- node dropping: ``int(0.2·n)`` random atoms are removed with their bonds;
- subgraph: starting from a random atom, the subgraph grows by a random neighbour of the
  atoms taken so far until it holds ``int(0.8·n)`` atoms (or its connected part ends);
- edge perturbation: ``int(0.2·bonds)`` random bonds are removed. The paper also adds edges;
  an added bond would need a bond type and direction the molecule does not have, so here
  bonds are only removed;
- attribute masking: ``int(0.2·n)`` random atoms become the mask token.

(The authors' transfer-learning script for molecules draws each view from node dropping and
subgraph only; pass ``augmentations`` to restrict the draw the same way.)

A view's graph embedding is the mean of its node states; a projection head (two linear
layers with a ReLU between, the width of the embedding) maps it to ``z``, and the loss is
the paper's NT-Xent (its eq. 3): for molecule n, ``−log exp(s(n,n)/τ) / Σ_{n'≠n} exp(s(n,n')/τ)``
with ``s`` the cosine similarity of view 1 of n and view 2 of n', averaged over the batch,
τ = 0.1 (the authors' setting for molecules).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tapweight_mol.graphs.draws import choose, fraction, graph_sizes, induced, random_members
from tapweight_mol.graphs.objectives import mask_atoms
from tapweight_mol.graphs.pyg import scatter

AUGMENTATIONS = ("node_dropping", "subgraph", "edge_perturbation", "attribute_masking")


def random_subgraph(graph, counts: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Mask of the atoms of a subgraph grown from a random atom of each ``active`` molecule,
    one random neighbour of the subgraph at a time, to ``counts[g]`` atoms."""
    src, dst = graph.edge_index
    n, b = graph.num_nodes, graph.num_graphs
    inside = torch.zeros(n, dtype=torch.bool, device=src.device)
    starts = random_members(graph.batch, graph.ptr)
    inside[starts[active]] = True
    size = active.long()
    steps = int(counts[active].max()) - 1 if bool(active.any()) else 0
    index = torch.arange(n, device=src.device)
    for _ in range(steps):
        frontier = torch.zeros_like(inside).index_fill_(0, dst[inside[src]], True) & ~inside
        key = torch.where(frontier, torch.rand(n, device=src.device), -1.0)
        best = scatter(key, graph.batch, 0, b, reduce="max")
        first = scatter(torch.where(frontier & (key == best[graph.batch]), index, n),
                        graph.batch, 0, b, reduce="min")  # the neighbour drawn, per molecule
        grow = (size < counts) & (first < n)
        inside[first[grow]] = True
        size = size + grow.long()
    return inside


def augment(graph, ratio: float, choices: tuple[int, ...]):
    """One view of every molecule: ``(x, edge_index, edge_attr, batch vector)``."""
    b, device = graph.num_graphs, graph.x.device
    src, dst = graph.edge_index
    pool = torch.tensor(choices, device=device)
    kind = pool[torch.randint(len(pool), (b,), device=device)][graph.batch]  # per atom
    sizes = graph_sizes(graph.batch, b)
    picked = choose(graph.batch, b, fraction(sizes, ratio))  # ratio of atoms: drop or mask
    keep = ~(picked & (kind == 0))
    grown = random_subgraph(graph, torch.clamp(fraction(sizes, 1 - ratio), min=1),
                            graph_sizes(graph.batch[kind == 1], b) > 0)
    keep &= grown | (kind != 1)
    bond = src < dst
    bond_graph = graph.batch[src[bond]]
    removed = choose(bond_graph, b, fraction(graph_sizes(bond_graph, b), ratio))
    removed &= kind[src[bond]] == 2
    n = graph.num_nodes
    gone = torch.isin(torch.minimum(src, dst) * n + torch.maximum(src, dst),
                      src[bond][removed] * n + dst[bond][removed])
    x = mask_atoms(graph.x, picked & (kind == 3))
    x, edge_index, edge_attr, _ = induced(x, graph.edge_index[:, ~gone], graph.edge_attr[~gone], keep)
    return x, edge_index, edge_attr, graph.batch[keep]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """GraphCL's NT-Xent: mean over n of ``−s(n,n)/τ + log Σ_{n'≠n} exp(s(n,n')/τ)``, with
    ``s`` the cosine similarity of ``z1[n]`` and ``z2[n']``. With one molecule there is no
    negative: the loss is 0 (still a function of θ)."""
    sim = F.normalize(z1.float(), dim=1) @ F.normalize(z2.float(), dim=1).T / temperature
    if len(sim) < 2:
        return sim.sum() * 0
    others = sim.masked_fill(torch.eye(len(sim), dtype=torch.bool, device=sim.device), float("-inf"))
    return (torch.logsumexp(others, 1) - sim.diagonal()).mean()


class GraphContrastive(nn.Module):
    """GraphCL: NT-Xent between the projected mean-pooled embeddings of two augmented views."""

    def __init__(self, emb_dim: int, ratio: float = 0.2, temperature: float = 0.1,
                 augmentations: tuple[str, ...] = AUGMENTATIONS):
        super().__init__()
        unknown = set(augmentations) - set(AUGMENTATIONS)
        if unknown or not augmentations:
            raise ValueError(f"GraphCL augmentations must be some of {AUGMENTATIONS}, got {augmentations}")
        self.ratio, self.temperature = ratio, temperature
        self.choices = tuple(AUGMENTATIONS.index(a) for a in augmentations)
        self.projection = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU(),
                                        nn.Linear(emb_dim, emb_dim))

    def embed(self, backbone: nn.Module, graph) -> torch.Tensor:
        x, edge_index, edge_attr, owner = augment(graph, self.ratio, self.choices)
        states = backbone.node_states(x, edge_index, edge_attr)
        return self.projection(scatter(states, owner, 0, graph.num_graphs, reduce="mean"))

    def forward(self, backbone: nn.Module, batch: dict) -> torch.Tensor:
        graph = batch["graph"]
        return nt_xent(self.embed(backbone, graph), self.embed(backbone, graph), self.temperature)
