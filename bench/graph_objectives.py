"""Cost of each graph pretraining objective, as a multiple of the backbone's own step.

``python -m bench.graph_objectives [--kind gcn] [--init PTH] [--batch 64] [--repeats 7] [--threads 1]``
times, on the first ``--batch`` molecules of BBBP, one forward and backward of each graph
objective (``mol.attrmask``, ``mol.contextpred``, ``mol.edgepred``, ``mol.graphcl``) against
the baseline in the same process: a forward and backward of the mean-pooled features alone
(``backbone(graph).sum()``). Rounds interleave
the variants; each prints its median seconds, its ratio to the baseline's median and its
mean loss over the rounds (fresh draws each round; the backbone from ``--init``, e.g. one of
Hu et al.'s released files, or random).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

BBBP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "moleculenet" / "bbbp.csv"
NAMES = ("mol.attrmask", "mol.contextpred", "mol.edgepred", "mol.graphcl")


def molecules(n: int):
    import pandas as pd
    from rdkit import Chem, RDLogger

    from tapweight_mol.graphs.featurize import mol_to_graph
    from tapweight_mol.graphs.pyg import Batch

    RDLogger.DisableLog("rdApp.*")
    mols = (Chem.MolFromSmiles(s) for s in pd.read_csv(BBBP)["smiles"])
    graphs = [mol_to_graph(m) for m in mols if m is not None and m.GetNumAtoms() > 0][:n]
    return {"graph": Batch.from_data_list(graphs), "index": torch.arange(len(graphs))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_objectives", description=__doc__)
    parser.add_argument("--kind", default="gcn", choices=("gin", "gcn", "graphsage", "gat"))
    parser.add_argument("--init", default="", help="a checkpoint of the backbone (Hu et al.'s .pth)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tapweight.plugin.manager import build_registry
    from tapweight_mol.graphs.gnn import GNN
    from tapweight_mol.graphs.loading import load_init

    torch.manual_seed(0)
    batch = molecules(args.batch)
    backbone = GNN(args.kind)
    if args.init:
        load_init(backbone, f"mol.{args.kind}", args.init)
    registry = build_registry()
    steps = {"backbone(graph) (baseline)": lambda: backbone(batch["graph"]).sum()}
    for name in NAMES:
        objective = registry.get("objectives", name).build(backbone, None, None)
        steps[name] = lambda o=objective: o(backbone, batch)
    times, losses = {name: [] for name in steps}, {name: [] for name in steps}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, step in steps.items():
            start = time.perf_counter()
            loss = step()
            loss.backward()
            times[name].append(time.perf_counter() - start)
            losses[name].append(float(loss.detach()))
    base = statistics.median(times["backbone(graph) (baseline)"][1:])
    print(f"{args.kind} from {args.init or 'random weights'}, {len(batch['index'])} BBBP molecules, "
          f"{args.threads} thread(s), median of {args.repeats} forward+backward, mean loss:")
    for name, seconds in times.items():
        median = statistics.median(seconds[1:])
        loss = "" if name not in NAMES else f"  loss {statistics.mean(losses[name][1:]):7.3f}"
        print(f"  {name:28s} {median:7.3f} s  {median / base:5.2f}×{loss}")


if __name__ == "__main__":
    main()
