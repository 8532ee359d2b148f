"""A run's collectives on a real process group, under ``torchrun`` (``bench gpu``'s ``nccl`` part):
``python -m torch.distributed.run --standalone --nproc_per_node N bench/collectives.py OUT.json``.

Each rank joins through `tapweight.distributed.setup` (NCCL on CUDA, gloo on the CPU,
and the gloo group beside it), then runs what a run runs: the stop signal (``max_``), rank 0's
objects (``broadcast``, ``on_main``) and level III's average of u (``mean_``) over
roberta-base's parameter shapes (a one-layer RoBERTa's on the CPU), checked against the known mean and timed against one
all-reduce per tensor. Rank 0 writes the JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapweight import distributed  # noqa: E402
from tapweight.commands.cli import end_rank  # noqa: E402

REPEATS = 5


def roberta_shapes(base: bool) -> list[torch.Size]:
    """The parameter shapes of roberta-base (125 M parameters, ~200 tensors), or of the tests'
    one-layer RoBERTa of width 32, made on no device."""
    from transformers import RobertaConfig, RobertaModel

    size = ({} if base else dict(vocab_size=600, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=128))
    with torch.device("meta"):
        model = RobertaModel(RobertaConfig(**{"vocab_size": 50265, **size}, max_position_embeddings=514,
                                           type_vocab_size=1), add_pooling_layer=False)
    return [p.shape for p in model.parameters()]


def timed(device: torch.device, work) -> float:
    """Median seconds of ``work()`` over ``REPEATS`` runs after one warm-up."""
    times = []
    for _ in range(REPEATS + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[REPEATS // 2]


def main(out: Path) -> None:
    device = distributed.setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world = distributed.rank(), distributed.world_size()
    result = {"world_size": world, "device": str(device), "backend": dist.get_backend(),
              "host_backend": dist.get_backend(distributed._host),
              "max_": distributed.max_(rank + 1) == world,
              "broadcast": distributed.broadcast(f"rank {rank}") == "rank 0",
              "on_main": distributed.on_main(lambda: "written") == ("written" if rank == 0 else None)}
    shapes = roberta_shapes(device.type == "cuda")
    u = [torch.full(s, float(rank + 1), device=device) for s in shapes]
    distributed.mean_(u)
    result["mean_"] = all(bool((t == (world + 1) / 2).all()) for t in u)
    result["u"] = {"tensors": len(u), "parameters": sum(t.numel() for t in u)}

    def one_by_one():
        for t in u:
            dist.all_reduce(t)
            t.div_(world)

    coalesced, separate = timed(device, lambda: distributed.mean_(u)), timed(device, one_by_one)
    result["mean_seconds"] = {"one_flat_buffer": coalesced, "one_per_tensor": separate,
                              "ratio_per_tensor_to_flat": separate / coalesced}
    if rank == 0:
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    end_rank(0)  # as tapweight's ranks end: past a gloo thread that would abort finalization
