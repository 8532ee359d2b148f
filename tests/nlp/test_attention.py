"""The hypergradient through RoBERTa's fused attention.

PyTorch's fused attention kernels (flash, memory-efficient; CUDA picks them even in float32,
and the CPU picks its flash kernel when dropout is 0) have no forward-mode derivative and no
derivative of their backward. The estimators that need either (``jvp``, ``neumann``, ``cg``,
``unroll > 1``) must still run: with dropout 0 the CPU takes the same fused path as CUDA.
"""

import pytest
import torch

from tests.nlp.conftest import TINY


@pytest.mark.parametrize("sets", [["reweight.hypergrad=jvp"], ["reweight.hypergrad=neumann"],
                                  ["reweight.hypergrad=cg"],
                                  ["reweight.unroll=2", "pretrain.optimizer=sgd", "finetune.optimizer=sgd"]],
                         ids=["jvp", "neumann", "cg", "unroll2"])
def test_hypergradients_through_attention_without_dropout(tiny, sets):
    from tapweight.job import resolved
    from tapweight.job.runner import resolve
    from tapweight.job.seed import build_engine

    _, data, backbone = tiny
    for module in backbone.modules():  # dropout 0: the CPU then picks its fused attention kernel
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    job = resolve("nlp", "sst2", preset="cpu", sets=[*TINY, "steps=1", *sets])
    cfg = job.cfg
    head = job.registry.get("heads", resolved.head_name(cfg, job.domain), "nlp").build(backbone.out_dim, 2, cfg)
    engine = build_engine(job, cfg, data, backbone, head, torch.device("cpu"))
    record = engine.step()
    assert torch.isfinite(torch.as_tensor([v for k, v in record.items() if k.startswith("hypergrad")])).all()
    assert any(k.startswith("hypergrad") for k in record)
