"""The graph objectives against hand-computed cases, their draws, gradients and determinism."""

import csv
import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tapweight import Split, Table
from tapweight.method.models import PretrainModel
from tapweight.plugin.manager import build_registry
from tapweight_mol.data import build_data
from tapweight_mol.graphs.draws import hops_from, random_members, random_ranks
from tapweight_mol.graphs.featurize import MASK_ATOM, smiles_to_graph
from tapweight_mol.graphs.gnn import GNN
from tapweight_mol.graphs.graphcl import AUGMENTATIONS, augment, nt_xent
from tapweight_mol.graphs.objectives import (
    AttributeMasking,
    ContextPrediction,
    EdgePrediction,
    negative_pairs,
)
from tapweight_mol.graphs.pyg import Batch
from tapweight_mol.moleculenet import Molecules
from tests.mol.conftest import BBBP, BBBP_TASK, SMILES

GRAPH_OBJECTIVES = ["mol.attrmask", "mol.contextpred", "mol.edgepred", "mol.graphcl"]
CHAIN = "C" * 20  # icosane: 20 atoms in a path
RING16 = "C1" + "C" * 14 + "C1"  # cyclohexadecane: every atom alike


def graphs(*smiles: str) -> Batch:
    return Batch.from_data_list([smiles_to_graph(s) for s in smiles])


class TypeStates(nn.Module):
    """A stand-in backbone with fixed weights: an atom's state is the embedding of its type
    plus, with ``neighbours``, the sum of its neighbours' embeddings (one round of sum
    aggregation over the edges it is given). It records the atoms it was last given."""

    def __init__(self, dim: int = 3, neighbours: bool = False, scale: float = 0.1):
        super().__init__()
        self.embedding = nn.Embedding(120, dim)
        with torch.no_grad():  # small fixed weights, different for every type
            self.embedding.weight.copy_(torch.cos(torch.arange(120 * dim).view(120, dim) * 0.7) * scale)
        self.neighbours, self.out_dim = neighbours, dim

    def node_states(self, x, edge_index, edge_attr):
        self.seen = x
        h = self.embedding(x[:, 0])
        if self.neighbours:
            h = h + torch.zeros_like(h).index_add_(0, edge_index[1], h[edge_index[0]])
        return h

    def forward(self, graph):
        h = self.node_states(graph.x, graph.edge_index, graph.edge_attr)
        return torch.zeros(graph.num_graphs, h.shape[1]).index_add_(0, graph.batch, h) / \
            torch.bincount(graph.batch, minlength=graph.num_graphs)[:, None]


def bce(logit: float, label: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -math.log(p if label else 1 - p)


# --- draws -------------------------------------------------------------------------------

def test_random_ranks_are_a_permutation_within_each_molecule():
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    torch.manual_seed(0)
    ranks = random_ranks(group, 3)
    for g, size in enumerate([3, 2, 4]):
        assert sorted(ranks[group == g].tolist()) == list(range(size))
    firsts = {tuple(random_ranks(group, 3)[:3].tolist()) for _ in range(200)}
    assert len(firsts) == 6  # every order of the first molecule's 3 atoms occurs


def test_hops_count_shortest_paths_on_a_path_and_a_ring():
    path, ring = graphs(CHAIN), graphs("C1CCCCCCCCCCC1")  # a path of 20, a ring of 12
    assert hops_from(torch.tensor([0]), path.edge_index, 20, 7).tolist() == \
        [min(i, 8) for i in range(20)]
    assert hops_from(torch.tensor([3]), ring.edge_index, 12, 7).tolist() == \
        [min(abs(i - 3), 12 - abs(i - 3)) for i in range(12)]


def test_context_regions_on_a_path_and_a_ring():
    """K = 5, r1 = 4, r2 = 7, counted by hand: on the path from its end atom 0, the
    substructure is atoms 0..5, the context 5..7 and the anchor atom 5; on a 16-ring from atom
    0, atoms within 5 hops either way, the context 5..7 hops either way, anchors 5 and 11."""
    objective = ContextPrediction(nn.Identity())
    batch = graphs(CHAIN, RING16)
    sub, ctx, anchors = objective.regions(batch, torch.tensor([0, 20]))
    on = lambda mask, offset: set((torch.nonzero(mask).flatten() - offset).tolist())  # noqa: E731
    assert on(sub[:20], 0) == set(range(6)) and on(ctx[:20], 0) == {5, 6, 7} and on(anchors[:20], 0) == {5}
    assert on(sub[20:], 0) == {0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 15}
    assert on(ctx[20:], 0) == {5, 6, 7, 9, 10, 11} and on(anchors[20:], 0) == {5, 11}


def test_negative_pairs_are_distinct_non_bonded_pairs_of_one_molecule():
    batch = graphs(*SMILES[:6], "CC")
    torch.manual_seed(0)
    pairs = negative_pairs(batch)
    bonded = set(map(tuple, batch.edge_index.t().tolist()))
    listed = list(map(tuple, pairs.t().tolist()))
    assert len(set(listed)) == len(listed)
    assert all(u != v and (u, v) not in bonded for u, v in listed)
    owner = batch.batch[pairs]
    assert (owner[0] == owner[1]).all()
    bonds = [smiles_to_graph(s).edge_index.shape[1] // 2 for s in SMILES[:6]]
    assert torch.bincount(owner[0], minlength=7).tolist() == bonds + [0]  # ethane: all pairs bonded


def bbbp_graphs(n: int) -> Batch:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    with BBBP.open() as f:
        rows = [row["smiles"] for row, _ in zip(csv.DictReader(f), range(n + 10))]
    return graphs(*[s for s in rows if Chem.MolFromSmiles(s) is not None][:n])


def networkx_graph(batch: Batch, g: int):
    lo, hi = int(batch.ptr[g]), int(batch.ptr[g + 1])
    graph = nx.Graph()
    graph.add_nodes_from(range(lo, hi))
    graph.add_edges_from(e for e in batch.edge_index.t().tolist() if lo <= e[0] < hi)
    return graph


def test_context_regions_match_networkx_shortest_paths_on_bbbp():
    """Hu et al.'s loader takes the regions from networkx's shortest-path lengths; ours agree
    on 40 BBBP molecules with every centre drawn at once."""
    batch = bbbp_graphs(40)
    objective = ContextPrediction(nn.Identity())
    torch.manual_seed(0)
    centres = random_members(batch.batch, batch.ptr)
    masks = objective.regions(batch, centres)
    for g in range(batch.num_graphs):
        hops = nx.single_source_shortest_path_length(networkx_graph(batch, g), int(centres[g]))
        for mask, (lo, hi) in zip(masks, [(0, 5), (5, 7), (5, 5)], strict=True):
            got = set(torch.nonzero(mask & (batch.batch == g)).flatten().tolist())
            assert got == {v for v, d in hops.items() if lo <= d <= hi}


def test_the_subgraph_view_is_connected_and_of_its_size_on_bbbp():
    batch = bbbp_graphs(40)
    torch.manual_seed(0)
    x, edge_index, _, owner = augment(batch, 0.2, (AUGMENTATIONS.index("subgraph"),))
    for g in range(batch.num_graphs):
        nodes = torch.nonzero(owner == g).flatten().tolist()
        view = nx.Graph()
        view.add_nodes_from(nodes)
        view.add_edges_from(e for e in edge_index.t().tolist() if e[0] in set(nodes))
        whole = networkx_graph(batch, g)
        target = max(int(whole.number_of_nodes() * 0.8), 1)
        assert nx.is_connected(view)
        assert len(nodes) == target if nx.is_connected(whole) else len(nodes) <= target


# --- hand-computed losses ----------------------------------------------------------------

def test_attribute_masking_equals_the_cross_entropy_of_the_mask_token():
    """Icosane (20 C) masks int(0.15·20) + 1 = 4 atoms and O2 one; with states that are the
    atom's type embedding alone, every masked atom's logits are those of the mask token."""
    backbone = TypeStates()
    objective = AttributeMasking(3)
    with torch.no_grad():
        objective.classifier.weight.copy_(torch.sin(torch.arange(119 * 3).view(119, 3)) * 0.5)
        objective.classifier.bias.copy_(torch.cos(torch.arange(119.0)) * 0.2)
    batch = graphs(CHAIN, "OO")
    batch.x[:, 1] = 1  # a chirality tag, which the mask token resets
    loss = objective(backbone, {"graph": batch})
    masked = backbone.seen[:, 0] == MASK_ATOM
    assert masked[:20].sum() == 4 and masked[20:].sum() == 1
    assert (backbone.seen[masked, 1] == 0).all() and (backbone.seen[~masked] == batch.x[~masked]).all()
    w, b = objective.classifier.weight.detach().numpy(), objective.classifier.bias.detach().numpy()
    logits = w @ backbone.embedding.weight[MASK_ATOM].detach().numpy() + b
    log_softmax = logits - np.log(np.exp(logits).sum())
    carbon, oxygen = 5, 7  # atomic number − 1
    expected = -(4 * log_softmax[carbon] + log_softmax[oxygen]) / 5
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_edge_prediction_equals_the_binary_cross_entropy_of_its_pairs():
    backbone = TypeStates(scale=1.0)
    batch = graphs("CCO", "OC(N)C")
    torch.manual_seed(3)
    loss = EdgePrediction()(backbone, {"graph": batch})
    torch.manual_seed(3)
    negatives = negative_pairs(batch).t().tolist()
    bonds = [(0, 1), (1, 2), (3, 4), (4, 5), (4, 6)]  # CCO, then O-C, C-N, C-C
    assert 0 < len(negatives) <= 2 + 3  # CCO has 2 non-bonded ordered pairs, the other 6
    e = backbone.embedding.weight.detach().double().numpy()
    types = batch.x[:, 0].tolist()
    score = lambda u, v: float(e[types[u]] @ e[types[v]])  # noqa: E731
    expected = (np.mean([bce(score(u, v), 1) for u, v in bonds])
                + np.mean([bce(score(u, v), 0) for u, v in negatives]))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_context_prediction_on_two_rings_and_a_molecule_without_context():
    """Rings of 16 C and 16 N, every atom alike, so any centre gives: a substructure that is a
    path of 11 atoms with the centre in the middle (2 neighbours: state 3·e), two context
    paths of 3 atoms whose anchors have one neighbour there (state 2·e'). Ethanol has no atom
    beyond 4 hops: it drops out. Positive logits 6·e·e' of the same ring, negatives 6·e·e' of
    the other ring."""
    backbone = TypeStates(neighbours=True, scale=0.5)
    context_gnn = TypeStates(neighbours=True, scale=0.4)
    with torch.no_grad():
        context_gnn.embedding.weight.copy_(context_gnn.embedding.weight.flip(1))
    objective = ContextPrediction(context_gnn)
    batch = graphs(RING16, "N1" + "N" * 14 + "N1", "CCO")
    loss = objective(backbone, {"graph": batch})
    e, c = backbone.embedding.weight.detach().double(), context_gnn.embedding.weight.detach().double()
    carbon, nitrogen = 5, 6
    same = [6 * float(e[t] @ c[t]) for t in (carbon, nitrogen)]
    crossed = [6 * float(e[carbon] @ c[nitrogen]), 6 * float(e[nitrogen] @ c[carbon])]
    expected = np.mean([bce(s, 1) for s in same]) + np.mean([bce(s, 0) for s in crossed])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("smiles", [("CCO", "CC"), ("CCCCCC", "CC")])
def test_context_prediction_without_two_context_atoms_gives_zero(smiles):
    """No molecule reaches beyond 4 hops of its centre, or hexane's last atom (5 hops from
    the centre, its first) is the only context atom of the batch: no pair, loss 0, and no
    error from the context GNN's batch norm."""
    torch.manual_seed(0)
    backbone = GNN("gin", num_layers=5, emb_dim=8)
    objective = ContextPrediction(GNN("gin", num_layers=3, emb_dim=8))
    batch = graphs(*smiles)
    centres = batch.ptr[:-1]  # each molecule's atom 0
    objective.regions = lambda graph, _: ContextPrediction.regions(objective, graph, centres)
    loss = objective(backbone, {"graph": batch})
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_nt_xent_matches_a_direct_implementation():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    a = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    b = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    terms = []
    for n in range(5):
        others = sum(np.exp(a[n] @ b[m] / 0.1) for m in range(5) if m != n)
        terms.append(-np.log(np.exp(a[n] @ b[n] / 0.1) / others))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), 0.1)
    assert float(got) == pytest.approx(np.mean(terms), rel=1e-5)


def test_nt_xent_of_a_single_molecule_has_no_negative_and_is_zero():
    z = torch.ones(1, 4, requires_grad=True)
    loss = nt_xent(z, z, 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros(1, 4))


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_each_augmentation_alters_the_molecule_as_the_paper_says(kind):
    """Icosane (20 atoms, 19 bonds) at ratio 0.2: node dropping keeps 16 atoms, subgraph a
    connected 16 (a path), edge perturbation removes int(3.8) = 3 bonds, masking masks 4."""
    torch.manual_seed(0)
    batch = graphs(CHAIN, CHAIN)
    x, edge_index, edge_attr, owner = augment(batch, 0.2, (AUGMENTATIONS.index(kind),))
    atoms = torch.bincount(owner, minlength=2).tolist()
    bonds = torch.bincount(owner[edge_index[0]], minlength=2).div(2).tolist()
    masked = torch.bincount(owner[x[:, 0] == MASK_ATOM], minlength=2).tolist()
    assert len(edge_attr) == edge_index.shape[1]
    expected = {"node_dropping": ([16, 16], None, [0, 0]), "subgraph": ([16, 16], [15, 15], [0, 0]),
                "edge_perturbation": ([20, 20], [16, 16], [0, 0]),
                "attribute_masking": ([20, 20], [19, 19], [4, 4])}[kind]
    assert atoms == expected[0] and masked == expected[2]
    if expected[1] is not None:
        assert bonds == expected[1]


# --- every registered objective ----------------------------------------------------------

@pytest.fixture(scope="module")
def registry():
    return build_registry()


def build(registry, name, backbone):
    return registry.get("objectives", name).build(backbone, None, None)


@pytest.mark.parametrize("kind", ["gin", "gcn"])
@pytest.mark.parametrize("name", GRAPH_OBJECTIVES)
def test_objective_gives_a_finite_scalar_whose_gradient_reaches_the_backbone(name, kind, registry):
    torch.manual_seed(0)
    backbone = GNN(kind, num_layers=5, emb_dim=16)
    objective = build(registry, name, backbone)
    loss = objective(backbone, {"graph": graphs(*SMILES), "index": torch.arange(len(SMILES))})
    assert loss.shape == () and math.isfinite(float(loss.detach()))
    loss.backward()
    grad = backbone.x_embedding1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is not None for p in objective.parameters())  # its head belongs to θ


@pytest.mark.parametrize("name", GRAPH_OBJECTIVES)
def test_single_atoms_and_salts_in_the_batch_keep_the_loss_finite(name, registry):
    """Methane and sodium chloride have no bond and no context; the salt is two components."""
    torch.manual_seed(0)
    backbone = GNN("gin", num_layers=5, emb_dim=16)
    objective = build(registry, name, backbone)
    batch = graphs("C", "[Na+].[Cl-]", "[Cl-].CC(C)NCC(O)COc1cccc2ccccc12", *SMILES[:3])
    for seed in range(3):
        torch.manual_seed(seed)
        loss = objective(backbone, {"graph": batch})
        assert math.isfinite(float(loss.detach()))
        loss.backward()


def test_losses_replay_under_a_seed_and_differ_under_another(registry):
    """The engine replays torch's global generator: the same seed gives the same loss vector."""
    torch.manual_seed(0)
    backbone = GNN("gin", num_layers=5, emb_dim=16)
    objectives = [build(registry, name, backbone) for name in GRAPH_OBJECTIVES]
    theta = PretrainModel(backbone, objectives, GRAPH_OBJECTIVES)
    batch = {"graph": graphs(*SMILES), "index": torch.arange(len(SMILES))}

    def losses(seed):
        torch.manual_seed(seed)
        return theta(batch).detach()

    assert torch.equal(losses(1), losses(1))
    assert (losses(1) != losses(2)).all()


def test_a_graph_objective_on_the_image_backbone_is_refused_with_one_line(registry):
    from tapweight import TapweightError

    with pytest.raises(TapweightError, match="needs a graph backbone"):
        build(registry, "mol.attrmask", nn.Linear(2, 2))


@pytest.fixture
def graph_corpus(mol_config):
    """The task corpus of SMILES as a graph backbone's run builds it, and one batch of it."""
    cfg = mol_config("backbone=mol.gin")
    table = Table(Molecules(SMILES), np.zeros((len(SMILES), 1), np.float32), ("y",))
    n = len(SMILES)
    data = build_data(cfg, table, Split(np.arange(n - 2), np.array([n - 2]), np.array([n - 1])), BBBP_TASK)
    batch = data.corpus_collate([data.corpus[i] for i in range(len(data.corpus))])
    return cfg, data.corpus, batch


def test_mg_and_the_random_labels_probe_work_beside_the_graph_objectives(registry, graph_corpus):
    """The MG-k classifiers and ``core.random_labels`` read the pooled features of the graph
    batch; each of the seven losses reaches the backbone."""
    cfg, corpus, batch = graph_corpus
    torch.manual_seed(0)
    backbone = GNN("gin", num_layers=5, emb_dim=16)
    names = [*GRAPH_OBJECTIVES, "mol.mg100", "mol.mg1000", "core.random_labels"]
    objectives = [registry.get("objectives", n).build(backbone, corpus, cfg) for n in names]
    theta = PretrainModel(backbone, objectives, names)
    torch.manual_seed(1)
    losses = theta(batch)
    assert losses.shape == (len(names),) and torch.isfinite(losses).all()
    for loss in losses:
        grad, = torch.autograd.grad(loss, backbone.x_embedding1.weight, retain_graph=True)
        assert grad.abs().sum() > 0
    mg = objectives[names.index("mol.mg100")]
    features = backbone(batch["graph"])
    expected = F.cross_entropy(mg.classifier(features), mg.ids[batch["index"]])
    assert float(losses[names.index("mol.mg100")]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("hypergrad", ["fd", "jvp"])
def test_tapweight_run_on_a_gnn_with_the_graph_objectives_and_the_probe(tmp_path, cache_dir, hypergrad):
    """``tapweight run`` end to end on a slice of BBBP: a GIN learns λ over the graph
    objectives, MG-100 and the random-labels probe, with the finite-difference and the
    forward-mode hypergradient."""
    from tapweight.job.runner import resolve, run

    data = tmp_path / "bbbp.csv"
    data.write_text("\n".join(BBBP.read_text().splitlines()[:121]) + "\n")  # header + 120 rows
    names = [*GRAPH_OBJECTIVES, "mol.mg100", "core.random_labels"]
    job = resolve("mol", "bbbp", preset="cpu", options={"data": str(data)}, sets=[
        "backbone=mol.gin", f"objectives=[{','.join(names)}]", "steps=2", "split=random",
        "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8", "final.epochs=1",
        "final.batch_size=16", "mol.render_workers=1", f"reweight.hypergrad={hypergrad}"])
    run(job, tmp_path / "run", quiet=True)
    weights = (tmp_path / "run" / "seed0" / "weights.csv").read_text().splitlines()
    assert weights[0] == "step," + ",".join(n.split(".")[1] for n in names)
    last = [float(v) for v in weights[-1].split(",")[1:]]
    assert len(weights) == 3 and all(math.isfinite(v) for v in last)
    assert sum(last) == pytest.approx(1.0) and last != [1 / len(names)] * len(names)  # λ moved
