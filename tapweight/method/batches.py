"""Batches for the three levels: endless, seeded, resumable streams; moving batches to a device."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tapweight.errors import TapweightError
from tapweight.plugin.specs import Split, Table


def is_graph_batch(batch: Any) -> bool:
    """A batch of graphs (PyTorch Geometric's ``Batch``): its tensors hold nodes and edges,
    its examples are its ``num_graphs`` graphs."""
    return hasattr(batch, "num_graphs") and hasattr(batch, "index_select") and hasattr(batch, "apply")


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``batch`` with ``fn`` applied to every tensor inside it (nested dicts, lists, tuples,
    graph batches)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if is_graph_batch(batch):
        return copy.copy(batch).apply(fn)  # a shallow copy: the caller's batch keeps its tensors
    if isinstance(batch, Mapping):
        return type(batch)({k: map_tensors(v, fn) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside a (nested) batch to ``device``. A uint8 tensor is a batch of
    images in [0, 255] (the molecular domain's): it crosses as bytes, a quarter of float32's,
    and becomes float32 in [0, 1] on ``device``."""
    return map_tensors(batch, lambda t: _moved(t, device))


def _moved(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    t = t.to(device, non_blocking=True)
    return t.float().div_(255) if t.dtype == torch.uint8 else t


def head_of_batch(batch: Any, fraction: float) -> Any:
    """The first ``ceil(fraction · B)`` examples of a batch of B (the first dimension of its
    first tensor, or a graph batch's graphs), but at least two (batch norm needs two): every
    tensor with that first dimension is cut along it, and a graph batch keeps its first graphs.
    The head of a shuffled batch is a random subset of it."""
    if fraction >= 1:
        return batch
    full = examples(batch)
    if full is None or full < 0:
        return batch
    keep = max(min(2, full), math.ceil(fraction * full))
    return _head(batch, full, keep)


def examples(batch: Any) -> int | None:
    """B: the graphs of the first graph batch or tensor in ``batch``, or the first dimension
    of that tensor (-1 for a scalar; None when there is neither)."""
    if is_graph_batch(batch):
        return batch.num_graphs
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else -1
    inner = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    return next((n for n in map(examples, inner) if n is not None), None)


def _head(batch: Any, full: int, keep: int) -> Any:
    if is_graph_batch(batch):
        return type(batch).from_data_list(batch.index_select(range(keep))) if batch.num_graphs == full else batch
    if isinstance(batch, torch.Tensor):
        return batch[:keep] if batch.dim() and batch.shape[0] == full else batch
    if isinstance(batch, Mapping):
        return type(batch)({k: _head(v, full, keep) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        return type(batch)(_head(v, full, keep) for v in batch)
    return batch


class BatchStream:
    """Shuffled batches over ``dataset`` forever, epoch after epoch.

    Epoch ``e`` is the permutation drawn from ``seed + e``, so the stream's position
    (epoch, batch index) is all a checkpoint needs to resume it exactly. Under data
    parallelism, ``shard=(rank, world)`` yields this rank's slice of each global batch.

    The global batch is ``batch_size`` (a multiple of ``world``, see `check_batch_size`)
    or, for a data set smaller than that, the largest multiple of ``world`` that fits:
    every batch is a uniformly random subset of one size that splits evenly over the
    processes, so the mean over the batch stays an unbiased estimate of the mean over the
    data set (and of the hypergradient built from it). One process and several see the
    same batches when given the same global size.
    """

    def __init__(self, dataset: Dataset, batch_size: int, collate: Callable, seed: int,
                 num_workers: int = 0, shard: tuple[int, int] = (0, 1), pin_memory: bool = False):
        self.rank, self.world = shard
        if len(dataset) == 0:
            raise TapweightError("a data split is empty: check the data file and the split")
        if len(dataset) < self.world:
            raise TapweightError(f"a data split has {len(dataset)} examples, fewer than the "
                                 f"{self.world} processes: check the data file and the split")
        check_batch_size("batch size", batch_size, self.world)
        self.dataset, self.collate, self.seed = dataset, collate, seed
        fit = min(batch_size, len(dataset))
        self.batch_size = fit - fit % self.world
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.per_epoch = len(dataset) // self.batch_size  # the ragged tail is dropped: equal batches
        self.epoch, self.index = 0, 0
        self._iter = None

    def _batches(self, epoch: int) -> list[list[int]]:
        """This rank's part of each batch of ``epoch``, in order."""
        gen = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.dataset), generator=gen).tolist()
        part = self.batch_size // self.world
        starts = (i * self.batch_size + self.rank * part for i in range(self.per_epoch))
        return [order[start:start + part] for start in starts]  # O(N): no slice to the end

    def _from_position(self):
        """Every batch from the current (epoch, index) on, epoch after epoch."""
        epoch, index = self.epoch, self.index
        while True:
            yield from self._batches(epoch)[index:]
            epoch, index = epoch + 1, 0

    def _start(self) -> None:
        # one loader for the whole run: its workers live (and prefetch) across epochs; an own
        # generator, so that creating it draws nothing from torch's global one
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self._iter = iter(DataLoader(self.dataset, batch_sampler=self._from_position(),
                                     collate_fn=self.collate, num_workers=self.num_workers,
                                     pin_memory=self.pin_memory, generator=gen))

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._start()
        batch = next(self._iter)
        self.index += 1
        if self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self._iter = state["epoch"], state["index"], None


def check_batch_size(name: str, batch_size: int, world: int) -> None:
    """A global batch size chosen by the user must split evenly over the processes."""
    if batch_size % world:
        raise TapweightError(f"{name} {batch_size} does not split over {world} processes: make it "
                             f"a multiple of {world} (each process reads batch_size / {world})")


def eval_batches(dataset: Dataset, batch_size: int, collate: Callable, num_workers: int = 0):
    """Every example once, in order (evaluation)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(0))


def random_split(table: Table, seed: int, fractions=(0.8, 0.1, 0.1)) -> Split:
    """Uniformly random 8:1:1 split of the rows."""
    n = len(table.inputs)
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    return Split(order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
