"""Vectorised per-molecule draws and subgraphs on a batch of molecular graphs.

The graph objectives pick atoms, bonds and centres per molecule; doing it one molecule at a
time in Python would cost more than the GNN itself, so each draw here works on the whole
batch at once. Every random number comes from torch's global generator on the batch's
device (the engine replays it), one tensor per call, so a draw depends only on the seed and
on the batch.
"""

from __future__ import annotations

import torch

from tapweight_mol.graphs.pyg import subgraph


def graph_sizes(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Number of items (atoms, bonds) of each graph ``[n_groups]``; ``group`` is each item's graph."""
    return torch.bincount(group, minlength=n_groups)


def random_ranks(group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Each item's place ``0..size-1`` in a uniformly random order of its graph's items."""
    order = torch.argsort(torch.rand(len(group), device=group.device))
    order = order[torch.argsort(group[order], stable=True)]  # by graph, random within
    sizes = graph_sizes(group, n_groups)
    start = torch.cumsum(sizes, 0) - sizes
    ranks = torch.empty_like(group)
    ranks[order] = torch.arange(len(group), device=group.device) - start[group[order]]
    return ranks


def choose(group: torch.Tensor, n_groups: int, counts: torch.Tensor) -> torch.Tensor:
    """A mask choosing ``counts[g]`` items of each graph ``g`` uniformly without replacement."""
    return random_ranks(group, n_groups) < counts[group]


def fraction(sizes: torch.Tensor, rate: float) -> torch.Tensor:
    """``int(size · rate)`` per graph: how many items a ratio of each graph's items is."""
    return torch.floor(sizes.float() * rate).long()


def random_members(graph_of_node: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """One node per graph, uniformly (graphs must have nodes): global node ids ``[n_graphs]``."""
    sizes = ptr[1:] - ptr[:-1]
    offset = (torch.rand(len(sizes), device=ptr.device) * sizes).long()
    return ptr[:-1] + torch.minimum(offset, sizes - 1)


def hops_from(sources: torch.Tensor, edge_index: torch.Tensor, n_nodes: int,
              max_hops: int) -> torch.Tensor:
    """Shortest-path hop count from the nearest of ``sources`` to every node (breadth-first,
    all sources at once); nodes farther than ``max_hops`` get ``max_hops + 1``."""
    src, dst = edge_index
    hops = torch.full((n_nodes,), max_hops + 1, dtype=torch.long, device=edge_index.device)
    reached = torch.zeros(n_nodes, dtype=torch.bool, device=edge_index.device)
    reached[sources] = True
    hops[sources] = 0
    frontier = reached
    for h in range(1, max_hops + 1):
        step = torch.zeros_like(reached).index_fill_(0, dst[frontier[src]], True) & ~reached
        hops[step] = h
        reached = reached | step
        frontier = step
    return hops


def induced(x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
            keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The subgraph induced by the nodes ``keep`` (a mask): its ``x``, ``edge_index``
    (renumbered) and ``edge_attr``, and each old node's new id (−1 for dropped nodes)."""
    edge_index, edge_attr = subgraph(keep, edge_index, edge_attr, relabel_nodes=True,
                                     num_nodes=len(keep))
    new_id = torch.cumsum(keep.long(), 0) - 1
    return x[keep], edge_index, edge_attr, torch.where(keep, new_id, -1)
