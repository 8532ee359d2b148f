"""Data parallelism over processes (``torchrun``), and a single process when not launched so.

Level I and level II wrap their models in ``DistributedDataParallel``; every rank reads its
own shard of each global batch. Level III's vectors (u = ∇_w L_val and the K directional
derivatives of the hypergradient) are averaged across ranks like gradients, so α is the same
on every rank. Rank 0 alone writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from tapweight.errors import RankZeroFailed, TapweightError


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (1 when not launched by it), known
    before the process group is joined."""
    return world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes; return this rank's device."""
    if launched_world_size() <= 1 or dist.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TapweightError(f"torchrun started more processes on this machine than it has CUDA GPUs "
                                 f"({torch.cuda.device_count()}): pass --nproc_per_node "
                                 f"{torch.cuda.device_count()}, or --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def max_(value: int) -> int:
    """The largest of the ranks' ``value`` (e.g. "has any rank received a signal?")."""
    if world_size() == 1:
        return value
    box = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return int(box.item())


def mean_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Average tensors across ranks, in place (a no-op in one process)."""
    if world_size() > 1:
        for t in tensors:
            dist.all_reduce(t)
            t.div_(world_size())
    return tensors


def broadcast(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn):
    """``fn()`` on rank 0 (its result; None on the others); rank 0's `TapweightError`
    stops every rank."""
    result, failure = None, None
    if is_main():
        try:
            result = fn()
        except TapweightError as err:
            failure = err
    message = broadcast(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    if message is not None:
        raise RankZeroFailed(message)
    return result


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` under torchrun, else ``module`` itself."""
    if world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a plugin backbone may hold parameters one level does not use
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
