"""Hu et al.'s released GCNs load right, not only shape-compatibly (``python -m bench graphprobe``).

Two checks on BBBP, each comparing a random start with the released files
(``../shared/data/pretrained``, their ``chem/model_architecture`` GCNs):

1. **Linear probe.** The frozen backbone's mean-pooled features of every molecule (eval
   mode), a standardised logistic regression on 80 % of them, ROC-AUC on the other 20 %;
   five random stratified splits (seeds 0-4). A misread file (a transposed weight, a wrong
   featurization, batch norm statistics not loaded) gives features no better than random ones.
2. **Fine-tuning.** The product's own fine-tune (``tapweight compare mol bbbp --methods none``
   with ``--backbone mol.gcn``, with and without ``--init``) on the scaffold split over five
   seeds, with Hu et al.'s fine-tuning settings (Adam at 0.001, batch 32, dropout 0.5; or
   ``--dropout``) for 20 epochs instead of their 100, the epoch chosen on validation.

Random init is ``torch.manual_seed(0)`` before building the GCN.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
BBBP = SHARED / "moleculenet" / "bbbp.csv"
STARTS = {"random init": None,
          "gcn_contextpred": SHARED / "pretrained" / "hu2020_gcn_contextpred.pth",
          "gcn_supervised_contextpred": SHARED / "pretrained" / "hu2020_gcn_supervised_contextpred.pth"}
#: the fine-tune of check 2 (``--set`` of tapweight compare): Hu et al.'s ``chem/finetune.py``
#: settings but for the number of epochs (theirs: 100) and the dropout, which `finetune_sets` adds
FINETUNE = ["final.optimizer=adam", "final.lr=0.001", "final.batch_size=32", "final.epochs=20"]


def finetune_sets(dropout: float) -> list[str]:
    return [*FINETUNE, f"mol.gnn_dropout={dropout}"]
SEEDS = (0, 1, 2, 3, 4)


def features(init: Path | None, smiles: list[str]) -> np.ndarray:
    """Mean-pooled features ``[N, 300]`` of the GCN started from ``init`` (random: seed 0)."""
    from tapweight_mol.graphs.featurize import smiles_to_graph
    from tapweight_mol.graphs.gnn import GNN
    from tapweight_mol.graphs.loading import load_init
    from tapweight_mol.graphs.pyg import Batch

    torch.manual_seed(0)
    model = GNN("gcn")
    if init is not None:
        load_init(model, "mol.gcn", str(init))
    model.eval()
    graphs = [smiles_to_graph(s) for s in smiles]
    with torch.no_grad():
        return torch.cat([model(Batch.from_data_list(graphs[i:i + 256]))
                          for i in range(0, len(graphs), 256)]).numpy()


def probe(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Test ROC-AUC of a logistic regression on 5 random stratified 80/20 splits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for seed in SEEDS:
        a, b, ya, yb = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(a, ya)
        scores.append(float(roc_auc_score(yb, model.predict_proba(b)[:, 1])))
    return scores


def finetune(out: Path, init: Path | None, dropout: float, quiet: bool = True) -> dict:
    """Test and validation ROC-AUC per seed of ``tapweight compare mol bbbp --backbone mol.gcn
    --methods none`` (finished runs in ``out`` are reused)."""
    import json

    from tapweight.commands.compare import compare

    options = {"data": str(BBBP), "backbone": "mol.gcn", **({"init": str(init)} if init else {})}
    compare("mol", ["bbbp"], ["none"], list(SEEDS), out, preset="cpu", options=options, sets=finetune_sets(dropout),
            quiet=quiet)
    metrics = [json.loads((out / "bbbp-none" / f"seed{k}" / "metrics.json").read_text()) for k in SEEDS]
    return {**summary([m["test"] for m in metrics]), "val": summary([m["val"] for m in metrics])}


def summary(scores: list[float]) -> dict:
    return {"per_seed": scores, "mean": statistics.mean(scores), "std": statistics.stdev(scores)}


def run(finetune_out: Path | None, dropout: float = 0.5) -> dict:
    """Both checks; the fine-tune runs (or reuses) its runs under ``finetune_out`` (None:
    skipped) with the GNN's ``dropout``."""
    from tapweight_mol.moleculenet import SETS, read_table

    table = read_table(SETS["bbbp"], BBBP)
    y = table.labels[:, 0].astype(int)
    result: dict = {"data": str(BBBP), "molecules": len(y), "probe": {}, "finetune": {}}
    for name, init in STARTS.items():
        start = time.perf_counter()
        x = features(init, list(table.inputs))
        result["probe"][name] = {**summary(probe(x, y)), "seconds": time.perf_counter() - start}
    if finetune_out is not None:
        for name in ("random init", "gcn_contextpred"):
            result["finetune"][name] = finetune(finetune_out / name.replace(" ", "-"), STARTS[name], dropout)
    result["finetune_sets"] = finetune_sets(dropout)
    return result


def table(result: dict) -> str:
    lines = ["linear probe (5 random 80/20 splits): test ROC-AUC mean ± std"]
    lines += [f"  {name:<28} {v['mean']:.3f} ± {v['std']:.3f}" for name, v in result["probe"].items()]
    if result["finetune"]:
        lines.append("fine-tuned, scaffold split, 5 seeds: test (val) ROC-AUC mean ± std")
        lines += [f"  {name:<28} {v['mean']:.3f} ± {v['std']:.3f}  ({v['val']['mean']:.3f} ± {v['val']['std']:.3f})"
                  for name, v in result["finetune"].items()]
    return "\n".join(lines)
