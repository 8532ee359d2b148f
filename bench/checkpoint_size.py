"""``python -m bench.checkpoint_size``: how large an engine ``checkpoint.pt`` is for roberta-base.

Builds the paper's NLP run offline (roberta-base's shape: 12 layers of 768, a 50,265-token
vocabulary, 514 positions, random weights; the MLM, SimCSE and segment-order objectives;
Adam on all three levels), takes one global step on a few short sentences so that every
optimizer holds its state, saves the engine state the way the runner does, and prints the
file's size and what it holds: per top-level entry, the bytes of its tensors, and whether any
tensor is stored twice (the MLM decoder is tied to the input embeddings, read at call time).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import RobertaConfig, RobertaModel

from tapweight.job.checkpoint import save_state
from tapweight.job.runner import resolve
from tapweight.job.seed import objective_names
from tapweight.method.batches import BatchStream
from tapweight.method.engine import Engine
from tapweight.method.models import PretrainModel, TaskModel
from tapweight_nlp.backbone import RobertaBackbone
from tapweight_nlp.data import build_data
from tapweight_nlp.load import TextTable
from tapweight_nlp.tasks import DATASETS, task_spec

SENTENCES = ["a charming and often affecting journey", "unflinchingly bleak and desperate",
             "the best film of the year", "an utterly incompetent conclusion"] * 4
ROBERTA_BASE = {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1}


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def engine_for_roberta_base(steps: int = 1) -> Engine:
    """The paper preset's engine over a roberta-base-shaped encoder, after ``steps`` steps."""
    job = resolve("nlp", "sst2", preset="paper", options={"method": "tapweight"}, sets=[
        "nlp.model=tiny", "nlp.tiny_vocab_size=300", "nlp.max_length=16", "pretrain.batch_size=4",
        "pretrain.accumulate=1", "finetune.batch_size=4", "reweight.batch_size=4"])
    cfg = job.cfg
    n = len(SENTENCES)
    table = TextTable(SENTENCES, np.array([[i % 2] for i in range(n)], dtype=float), ("sst2",),
                      parts=np.full(n, "train"), classes=("negative", "positive"))
    data = build_data(cfg, table, job.domain.splits["glue"](table, 0), task_spec(DATASETS["sst2"]))
    backbone = RobertaBackbone(RobertaModel(RobertaConfig(**ROBERTA_BASE), add_pooling_layer=False))
    names = objective_names(job)
    objectives = [job.registry.get("objectives", k).build(backbone, data.corpus, cfg) for k in names]
    head = job.registry.get("heads", job.domain.head or "core.linear").build(backbone.out_dim, 2, cfg)
    theta, w = PretrainModel(backbone, objectives, names), TaskModel(copy.deepcopy(backbone), head)
    streams = [BatchStream(d, 4, c, s) for d, c, s in ((data.corpus, data.corpus_collate, 0),
                                                       (data.train, data.task_collate, 1),
                                                       (data.val, data.task_collate, 2))]
    engine = Engine(theta, w, *streams, cfg, "ce", torch.device("cpu"))
    for _ in range(steps):
        engine.step()
    return engine


def main() -> None:
    argparse.ArgumentParser(prog="python -m bench.checkpoint_size", description=__doc__).parse_args()
    torch.manual_seed(0)
    engine = engine_for_roberta_base()
    state = engine.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        save_state(state, path)
        size = path.stat().st_size
    print(f"checkpoint.pt: {size / 2**20:,.0f} MiB ({size:,} bytes); θ has "
          f"{sum(p.numel() for p in engine.theta.parameters()):,} parameters")
    seen: dict[int, str] = {}
    for key, value in state.items():
        inside = tensors(value)
        nbytes = sum(t.untyped_storage().nbytes() for t in inside)
        shared = [seen[t.untyped_storage().data_ptr()] for t in inside
                  if t.untyped_storage().data_ptr() in seen]
        seen.update({t.untyped_storage().data_ptr(): key for t in inside})
        print(f"  {key:<11} {nbytes / 2**20:>9,.1f} MiB in {len(inside):>4} tensors"
              + (f"  (shares storage with {sorted(set(shared))})" if shared else ""))


if __name__ == "__main__":
    main()
