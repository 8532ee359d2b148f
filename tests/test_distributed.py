"""Collectives that every backend serves, against a recording fake of ``torch.distributed``.

No GPU here: the fake plays rank 0 of a two-process job whose default group is NCCL, and
``meta`` tensors stand for CUDA ones. NCCL serves only CUDA tensors, gloo only CPU ones (as
far as tapweight uses it), so a collective handed a tensor its group cannot serve fails here
as it fails under ``torchrun`` on GPUs.
"""

import signal
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from tapweight import distributed
from tapweight.interrupts import Signals

SERVES = {"nccl": {"cuda"}, "gloo": {"cpu"}}
CUDA = "meta"  # the stand-in for a CUDA tensor
OTHER_RANK = 3  # the other rank holds 3× this rank's values


class Group:
    def __init__(self, backend: str, timeout: timedelta | None):
        self.backend, self.timeout = backend, timeout


class FakeDist:
    """Rank 0 of two; every collective is recorded as (name, backend, timeout, numel), and
    one handed a tensor on a device its group's backend cannot serve raises."""

    ReduceOp = dist.ReduceOp
    ProcessGroup = Group

    def __init__(self):
        self.default: Group | None = None
        self.calls: list[tuple] = []

    def is_initialized(self) -> bool:
        return self.default is not None

    def init_process_group(self, backend: str, timeout: timedelta | None = None) -> None:
        self.default = Group(backend, timeout)

    def new_group(self, backend: str | None = None, timeout: timedelta | None = None) -> Group:
        return Group(backend or self.default.backend, timeout)

    def get_rank(self, group=None) -> int:
        return 0

    def get_world_size(self, group=None) -> int:
        return 2

    def _record(self, name: str, tensor: torch.Tensor, group: Group | None) -> Group:
        group = group or self.default
        device = "cuda" if tensor.device.type == CUDA else tensor.device.type
        if device not in SERVES[group.backend]:
            raise RuntimeError(f"{name}: {group.backend} cannot serve a {device} tensor")
        self.calls.append((name, group.backend, group.timeout, tensor.numel()))
        return group

    def all_reduce(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> None:
        self._record("all_reduce", tensor, group)
        if tensor.device.type != CUDA:
            tensor.mul_(OTHER_RANK if op == dist.ReduceOp.MAX else 1 + OTHER_RANK)

    def broadcast_object_list(self, objects: list, src: int = 0, group=None) -> None:
        # torch pickles the objects into a tensor on the group's device: CUDA's for NCCL
        backend = (group or self.default).backend
        self._record("broadcast_object_list", torch.zeros(1, device=CUDA if backend == "nccl" else "cpu"), group)


def launch(monkeypatch, world: int) -> None:
    """The environment ``torchrun`` gives rank 0 of ``world`` processes."""
    for name, value in {"WORLD_SIZE": world, "RANK": 0, "LOCAL_RANK": 0, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, str(value))


@pytest.fixture
def nccl_job(monkeypatch):
    """Rank 0 of a two-GPU ``torchrun`` job, joined through `distributed.setup`."""
    fake = FakeDist()
    monkeypatch.setattr(distributed, "dist", fake)
    monkeypatch.setattr(distributed, "_host", None, raising=False)
    launch(monkeypatch, 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert distributed.setup(torch.device("cuda")) == torch.device("cuda", 0)
    assert fake.default.backend == "nccl" and current == [torch.device("cuda", 0)]
    return fake


def test_every_collective_gets_tensors_its_backend_serves(nccl_job):
    signals = Signals()
    signals.received = signal.SIGTERM
    assert signals.pending() == signal.SIGTERM * OTHER_RANK  # the step loop's stop signal: the ranks' max
    assert distributed.max_(0) == 0
    assert distributed.broadcast({"step": 4}) == {"step": 4}
    assert distributed.on_main(lambda: "written") == "written"
    u = [torch.ones(3, device=CUDA), torch.ones(2, 2, device=CUDA)]  # a CUDA model's vectors
    assert [t.shape for t in distributed.mean_(u)] == [(3,), (2, 2)]
    values = [torch.tensor([2.0, 4.0]), torch.tensor(1.0, dtype=torch.float64)]
    distributed.mean_(values)  # CPU values: the mean of x and 3x is 2x
    assert values[0].tolist() == [4.0, 8.0] and values[1].item() == 2.0


def test_mean_is_one_all_reduce_per_device_and_dtype(nccl_job):
    u = [torch.ones(5, device=CUDA) for _ in range(200)] + [torch.ones(2, device=CUDA, dtype=torch.float64)]
    distributed.mean_(u)
    assert [(c[1], c[3]) for c in nccl_job.calls] == [("nccl", 1000), ("nccl", 2)]


def test_the_ranks_wait_for_rank_zero_on_gloo_past_the_step_timeout(nccl_job):
    """Rank 0's final fine-tune, diagnostics and writes may outlast NCCL's watchdog: the
    other ranks wait for its result (a broadcast) on the gloo group, with its own timeout."""
    distributed.broadcast(None)
    distributed.on_main(lambda: None)
    waits = [c for c in nccl_job.calls if c[0] == "broadcast_object_list"]
    assert len(waits) == 2
    assert all(backend == "gloo" and timeout >= timedelta(days=1) for _, backend, timeout, _ in waits)
    assert nccl_job.default.timeout == distributed.STEP_TIMEOUT


def test_ddp_does_not_resend_buffers(nccl_job, monkeypatch):
    made = {}
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda module, **kw: made.update(kw))
    distributed.wrap(torch.nn.Linear(2, 2), torch.device("cuda", 0))
    assert made["broadcast_buffers"] is False and made["device_ids"] == [0]


def test_one_process_under_torchrun_joins_a_group(monkeypatch):
    """One GPU under torchrun runs the same collectives as several (NCCL included)."""
    fake = FakeDist()
    monkeypatch.setattr(distributed, "dist", fake)
    monkeypatch.setattr(distributed, "_host", None, raising=False)
    launch(monkeypatch, 1)
    distributed.setup(torch.device("cpu"))
    assert fake.default.backend == "gloo"
    distributed.max_(1)
    assert [c[:2] for c in fake.calls] == [("all_reduce", "gloo")]
