"""The GNN backbones: Hu et al.'s featurization, their layers against loop-by-loop
references, their checkpoint layouts loaded strictly, and a tiny run per backbone."""

import json

import pytest
import torch
import torch.nn.functional as F
from rdkit import Chem

from tapweight import TapweightError
from tapweight.method.batches import head_of_batch, to_device
from tapweight_mol.graphs.data import Graphs, GraphStore, corpus_collate, decode, encode
from tapweight_mol.graphs.featurize import mol_to_graph, smiles_to_graph
from tapweight_mol.graphs.gnn import GNN
from tapweight_mol.graphs.loading import load_init

D = 8  # node state width of the small models


def test_featurization_of_a_hand_computed_molecule():
    g = smiles_to_graph("N[C@@H](C)C#N")  # N, chiral C (clockwise), C, C, N; the last bond triple
    assert g.x.tolist() == [[6, 0], [5, 1], [5, 0], [5, 0], [6, 0]]
    assert g.edge_index.tolist() == [[0, 1, 1, 2, 1, 3, 3, 4], [1, 0, 2, 1, 3, 1, 4, 3]]
    assert g.edge_attr.tolist() == [[0, 0]] * 6 + [[2, 0]] * 2
    g = smiles_to_graph("F/C=C/F")  # directed single bonds around a double bond
    assert g.x[:, 0].tolist() == [8, 5, 5, 8]
    assert g.edge_attr.tolist() == [[0, 1], [0, 1], [1, 0], [1, 0], [0, 1], [0, 1]]
    g = smiles_to_graph("*c1ccccc1")  # a dummy atom, aromatic bonds
    assert g.x[0].tolist() == [118, 0] and set(g.edge_attr[2:, 0].tolist()) == {3}
    mol = Chem.MolFromSmiles("CC(F)Cl")
    mol.GetAtomWithIdx(1).SetChiralTag(Chem.ChiralType.CHI_OTHER)  # no row in their table: unspecified
    assert mol_to_graph(mol).x[1].tolist() == [5, 0]
    ion = smiles_to_graph("[Na+]")
    assert ion.edge_index.shape == (2, 0) and ion.edge_attr.shape == (0, 2)


def test_graphs_are_cached_bit_for_bit(tmp_path):
    graphs = Graphs(GraphStore(tmp_path))
    first = graphs("CC(=O)Oc1ccccc1C(=O)O")
    assert len(graphs.store) == 1
    again = decode(graphs.store.get("CC(=O)Oc1ccccc1C(=O)O"))
    for key in ("x", "edge_index", "edge_attr"):
        assert torch.equal(getattr(first, key), getattr(again, key))
    assert decode(encode(first)).x.dtype == torch.long


def reference_layer(kind: str, layer, h: torch.Tensor, edges: list, attrs: list) -> torch.Tensor:
    """One of Hu et al.'s layers computed edge by edge, from the equations (gnn.py's docstring)."""
    n = len(h)
    edges = edges + [(i, i) for i in range(n)]
    attrs = attrs + [(4, 0)] * n
    bond = [layer.edge_embedding1.weight[t] + layer.edge_embedding2.weight[d] for t, d in attrs]
    deg = [sum(1 for _, i in edges if i == k) for k in range(n)]
    out = []
    for i in range(n):
        into = [(e, j) for e, (j, t) in enumerate(edges) if t == i]
        if kind == "gin":
            out.append(layer.mlp(sum(h[j] + bond[e] for e, j in into)))
        elif kind == "gcn":
            z = layer.linear(h)
            out.append(sum((z[j] + bond[e]) / (deg[i] * deg[j]) ** 0.5 for e, j in into))
        elif kind == "graphsage":
            z = layer.linear(h)
            out.append(F.normalize(sum(z[j] + bond[e] for e, j in into) / len(into), dim=0))
        else:  # gat, 2 heads
            z = layer.weight_linear(h).view(n, 2, D)
            m = {e: z[j] + bond[e].view(2, D) for e, j in into}
            score = torch.stack([F.leaky_relu((torch.cat([z[i], m[e]], -1) * layer.att[0]).sum(-1), 0.2)
                                 for e, _ in into])  # [in-edges, heads]
            alpha = score.softmax(0)
            out.append(sum(alpha[k, :, None] * m[e] for k, (e, _) in enumerate(into)).mean(0) + layer.bias)
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["gin", "gcn", "graphsage", "gat"])
def test_layers_agree_with_an_edge_by_edge_reference(kind):
    torch.manual_seed(0)
    g = smiles_to_graph("OC(=O)C=C")
    model = GNN(kind, num_layers=1, emb_dim=D).double()
    h = torch.randn(len(g.x), D, dtype=torch.float64)
    edges = list(map(tuple, g.edge_index.t().tolist()))
    attrs = list(map(tuple, g.edge_attr.tolist()))
    ours = model.gnns[0](h, g.edge_index, g.edge_attr)
    torch.testing.assert_close(ours, reference_layer(kind, model.gnns[0], h, edges, attrs))


def hu_state(kind: str, layers: int = 2, d: int = D) -> dict:
    """A state dict with the names and shapes of Hu et al.'s chem/model.py GNN, written out."""
    width = 2 * d if kind == "gat" else d
    state = {"x_embedding1.weight": torch.randn(120, d), "x_embedding2.weight": torch.randn(3, d)}
    for i in range(layers):
        p = f"gnns.{i}."
        if kind == "gin":
            state |= {p + "mlp.0.weight": torch.randn(2 * d, d), p + "mlp.0.bias": torch.randn(2 * d),
                      p + "mlp.2.weight": torch.randn(d, 2 * d), p + "mlp.2.bias": torch.randn(d)}
        elif kind == "gat":
            state |= {p + "weight_linear.weight": torch.randn(2 * d, d), p + "weight_linear.bias": torch.randn(2 * d),
                      p + "att": torch.randn(1, 2, 2 * d), p + "bias": torch.randn(d)}
        else:
            state |= {p + "linear.weight": torch.randn(d, d), p + "linear.bias": torch.randn(d)}
        state |= {p + "edge_embedding1.weight": torch.randn(6, width),
                  p + "edge_embedding2.weight": torch.randn(3, width)}
        b = f"batch_norms.{i}."
        state |= {b + "weight": torch.randn(d), b + "bias": torch.randn(d), b + "running_mean": torch.randn(d),
                  b + "running_var": torch.rand(d), b + "num_batches_tracked": torch.tensor(7)}
    return state


@pytest.mark.parametrize("kind", ["gin", "gcn", "graphsage", "gat"])
def test_hu_layouts_load_strictly(kind, tmp_path):
    state = hu_state(kind)
    file = tmp_path / f"{kind}.pth"
    torch.save(state, file)
    model = GNN(kind, num_layers=2, emb_dim=D)
    report = load_init(model, f"mol.{kind}", str(file))
    assert report.loaded == len(state) and not report.missing and not report.mismatched and not report.unexpected
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    finetuned = tmp_path / "graphpred.pth"  # their finetune.py model: gnn.* and a task head
    torch.save({**{f"gnn.{k}": v for k, v in state.items()}, "graph_pred_linear.weight": torch.randn(1, D)}, finetuned)
    assert load_init(GNN(kind, 2, D), f"mol.{kind}", str(finetuned)).unexpected == ["graph_pred_linear.weight"]


def test_another_layout_is_refused_in_one_line(tmp_path):
    file = tmp_path / "gin.pth"
    torch.save(hu_state("gin"), file)
    with pytest.raises(TapweightError) as error:
        load_init(GNN("gcn", 2, D), "mol.gcn", str(file))
    message = str(error.value)
    assert "\n" not in message and "gin layout" in message
    assert "missing gnns.0.linear.weight" in message
    torch.save(hu_state("gcn", d=D + 1), file)
    with pytest.raises(TapweightError, match=r"of another shape x_embedding1.weight \(120, 9\) → \(120, 8\)"):
        load_init(GNN("gcn", 2, D), "mol.gcn", str(file))


def test_graph_batches_move_and_cut_by_graph():
    batch = corpus_collate([(i, smiles_to_graph(s)) for i, s in enumerate(["CCO", "c1ccccc1", "CN", "C#N"])])
    head = head_of_batch(batch, 0.5)
    assert head["graph"].num_graphs == 2 and head["index"].tolist() == [0, 1]
    assert len(head["graph"].x) == 3 + 6
    moved = to_device(batch, torch.device("cpu"))
    assert moved["graph"] is not batch["graph"] and torch.equal(moved["graph"].x, batch["graph"].x)


def test_features_are_mean_pooled_node_states():
    torch.manual_seed(0)
    batch = corpus_collate([(0, smiles_to_graph("CCO")), (1, smiles_to_graph("c1ccccc1O"))])["graph"]
    model = GNN("gcn", 2, D).eval()
    nodes = model.node_states(batch.x, batch.edge_index, batch.edge_attr)
    torch.testing.assert_close(model(batch), torch.stack([nodes[:3].mean(0), nodes[3:].mean(0)]))


GRAPH_TINY = ["steps=2", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8",
              "final.epochs=1", "final.batch_size=16", "mol.gnn_layers=2", "mol.gnn_dim=16",
              "mol.render_workers=1", "split=random"]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mol.gin", "mol.gcn", "mol.graphsage", "mol.gat"])
def test_tiny_run_per_graph_backbone(backbone, tmp_path, cache_dir):
    from tapweight.job.runner import resolve, run
    from tests.mol.conftest import BBBP

    data = tmp_path / "bbbp.csv"
    data.write_text("\n".join(BBBP.read_text().splitlines()[:121]) + "\n")
    job = resolve("mol", "bbbp", preset="cpu", options={"data": str(data), "backbone": backbone},
                  sets=[*GRAPH_TINY, f"mol.cache_dir={cache_dir}"])
    run(job, tmp_path / "run", quiet=True)
    seed = tmp_path / "run" / "seed0"
    assert json.loads((seed / "metrics.json").read_text())["best_epoch"] == 1
    header = "step,attrmask,contextpred,edgepred,graphcl,mg100,mg1000,mg10000\n"  # the graph defaults
    assert (seed / "weights.csv").read_text().startswith(header)


def test_image_objectives_refuse_a_graph_backbone():
    from tapweight.job.runner import resolve
    from tapweight_mol.plugin import _jpp

    cfg = resolve("mol", "bbbp", preset="cpu", options={"backbone": "mol.gcn"}).cfg
    with pytest.raises(TapweightError, match="mol.jpp works on images"):
        _jpp(None, None, cfg)


def test_default_objectives_follow_the_backbone():
    from tapweight.job import resolved
    from tapweight.job.runner import resolve

    graph = ["mol.attrmask", "mol.contextpred", "mol.edgepred", "mol.graphcl", "mol.mg100", "mol.mg1000", "mol.mg10000"]
    for backbone, expected in (("mol.gcn", graph),
                               ("", ["mol.mg100", "mol.mg1000", "mol.mg10000", "mol.jpp", "mol.mcl"])):
        job = resolve("mol", "bbbp", preset="cpu", options={"backbone": backbone} if backbone else {})
        assert resolved.objective_names(job.cfg, job.registry, job.domain) == expected


def test_importing_pyg_leaves_torch_weights_only_allow_list_as_it_was():
    """PyG's import adds dict, list, defaultdict... to torch's allow-list; ours takes them back, so
    a checkpoint that holds them is still named as needing unpickling."""
    import subprocess
    import sys

    code = ("import torch.serialization as s; before = s.get_safe_globals(); "
            "import tapweight_mol.graphs.pyg; assert s.get_safe_globals() == before, 'widened'; "
            "import collections; assert collections.defaultdict not in s.get_safe_globals()")
    subprocess.run([sys.executable, "-c", code], check=True)
