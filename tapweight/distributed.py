"""Data parallelism over processes (``torchrun``), and a single process when not launched so.

Level I and level II wrap their models in ``DistributedDataParallel``; every rank reads its
own shard of each global batch. Level III's vectors (u = ∇_w L_val and the K directional
derivatives of the hypergradient) are averaged across ranks like gradients, so α is the same
on every rank. Rank 0 alone writes files.

Two process groups: the default one (NCCL on CUDA, gloo on the CPU) carries the tensors of
the steps, each on its own device; a gloo group beside it carries what lives on the CPU
(signals, rank 0's objects and results). Every rank runs the same steps, so a collective of
the default group waits no longer than the ranks' steps differ (``STEP_TIMEOUT``); the ranks
that wait for rank 0 alone (its final fine-tune, diagnostics and writes: minutes to hours)
wait on the gloo group, where no NCCL watchdog applies, for up to ``RANK_ZERO_WAIT``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from tapweight.errors import RankZeroFailed, TapweightError

#: the longest a collective of the steps waits for the other ranks (torch's default for NCCL)
STEP_TIMEOUT = timedelta(minutes=10)
#: the longest the other ranks wait for rank 0 alone; torchrun stops every rank as soon as one
#: fails, so this bounds only a hang
RANK_ZERO_WAIT = timedelta(days=7)
_host: dist.ProcessGroup | None = None  # the gloo group for values on the CPU


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (1 when not launched by it), known
    before the process group is joined."""
    return world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """Whether ``torchrun`` (or a launcher like it) started this process, even as its only one."""
    return launched_world_size() > 1 or {"MASTER_ADDR", "RANK"} <= os.environ.keys()


def setup(device: torch.device) -> torch.device:
    """Join the process groups that ``torchrun`` describes (for one process too: one GPU then
    runs the NCCL path); return this rank's device (on CUDA, made the current one)."""
    global _host
    if launched() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise TapweightError(f"torchrun started more processes on this machine than it has CUDA GPUs "
                                     f"({torch.cuda.device_count()}): pass --nproc_per_node "
                                     f"{torch.cuda.device_count()}, or --device cpu")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=STEP_TIMEOUT)
    if dist.is_initialized() and _host is None:
        _host = dist.new_group(backend="gloo", timeout=RANK_ZERO_WAIT)
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def max_(value: int) -> int:
    """The largest of the ranks' ``value`` (e.g. "has any rank received a signal?")."""
    if not dist.is_initialized():
        return value
    box = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=_host)
    return int(box.item())


def mean_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Average tensors across ranks, in place (a no-op in one process): one all-reduce of one
    flat buffer per device and dtype, on the group that serves the device."""
    if not dist.is_initialized():
        return tensors
    kinds: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        kinds.setdefault((t.device, t.dtype), []).append(t)
    for (device, _), same in kinds.items():
        flat = torch.cat([t.reshape(-1) for t in same])
        dist.all_reduce(flat, group=_host if device.type == "cpu" else None)
        flat.div_(world_size())
        for t, part in zip(same, flat.split([t.numel() for t in same])):
            t.copy_(part.view_as(t))
    return tensors


def broadcast(value):
    """Rank 0's ``value`` on every rank (any picklable object), through the gloo group: the
    other ranks may wait here while rank 0 works alone."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_host)
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
    """``DistributedDataParallel(module)`` under torchrun, else ``module`` itself.

    Buffers are not re-sent from rank 0 before each forward (``broadcast_buffers=False``):
    most never change (image statistics, jigsaw orders, a corpus's cluster ids: hundreds of
    MB for a large corpus), and the running statistics of batch norm are read from rank 0
    alone, by its checkpoints and its final fine-tune, which its own forwards keep as they
    were; the forwards use the statistics of their batch, so no gradient depends on them."""
    if not dist.is_initialized():
        return module
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a plugin backbone may hold parameters one level does not use
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True,
                                                     broadcast_buffers=False)
