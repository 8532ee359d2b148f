"""Device settings a run reads, sets and gives back: TF32 (torch's ``fp32_precision`` flags,
which can be set without CUDA), deterministic kernels, and devices that are refused (MPS)."""

import contextlib
import os

import pytest
import torch

from tapweight.errors import TapweightError
from tapweight.job.determinism import deterministic
from tapweight.job.runner import pick_device
from tapweight.method.estimators import classes
from tests.test_cli import cli, run_toy
from tests.test_engine import config, make_engine

MATMUL, CONV = torch.backends.cuda.matmul, torch.backends.cudnn.conv


@contextlib.contextmanager
def user_tf32(matmul: str, conv: str):
    """The user's TF32 settings through ``fp32_precision`` for a block, torch's back after it."""
    saved = MATMUL.fp32_precision, CONV.fp32_precision
    MATMUL.fp32_precision, CONV.fp32_precision = matmul, conv
    try:
        yield
    finally:
        MATMUL.fp32_precision, CONV.fp32_precision = saved


@pytest.mark.parametrize("estimator, during", [("fd", {("tf32", "tf32"), ("ieee", "ieee")}),
                                               ("jvp", {("tf32", "tf32"), ("ieee", "ieee")})])
def test_an_estimator_leaves_the_users_tf32_setting_as_it_was(estimator, during):
    """fd's and jvp's forwards run in full float32 (where they are exact), level I's with TF32
    as the user allows it; afterwards the flags read what the user set (reading
    ``allow_tf32`` would raise once they are set)."""
    cfg = config()
    cfg.reweight.hypergrad = estimator
    with user_tf32("tf32", "tf32"):
        engine = make_engine(cfg)
        seen = set()
        engine.theta.register_forward_hook(lambda *_: seen.add((MATMUL.fp32_precision, CONV.fp32_precision)))
        record = engine.step()
        assert (MATMUL.fp32_precision, CONV.fp32_precision) == ("tf32", "tf32")
    assert seen == during
    assert any(k.startswith("hypergrad") for k in record)


def test_tf32_is_read_through_the_flags_it_inherits():
    """fd-forward is a default only where level I rounds as float32 does: not with TF32."""
    cfg, cuda = config(), torch.device("cuda")
    with user_tf32("ieee", "none"):  # conv inherits cuDNN's setting
        saved = torch.backends.cudnn.fp32_precision
        try:
            torch.backends.cudnn.fp32_precision = "ieee"
            assert classes()["fd-forward"].default_for(cfg, cuda)
            torch.backends.cudnn.fp32_precision = "tf32"
            assert not classes()["fd-forward"].default_for(cfg, cuda)
        finally:
            torch.backends.cudnn.fp32_precision = saved


def test_matmul_precision_medium_stays_medium():
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        cfg = config()
        cfg.reweight.hypergrad = "fd"
        make_engine(cfg).step()
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(saved)


def test_deterministic_sets_the_flags_for_the_run_and_restores_them(toy, tmp_path, monkeypatch):
    from tapweight.job import seed

    seen = []
    refinetune = seed.refinetune

    def recording(*args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return refinetune(*args, **kwargs)

    monkeypatch.setattr(seed, "refinetune", recording)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    run_toy(tmp_path, "--set", "deterministic=true")
    assert seen == [(True, True, False, ":4096:8")]
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before
    assert torch.backends.cudnn.benchmark and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_mps_is_refused_in_one_line_where_it_is_available(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(TapweightError, match="MPS has no float64"):
        pick_device("mps")
    assert cli("run", "toy", "blobs", "--quiet", "--device", "mps", "--out", str(tmp_path / "run")) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --device mps: MPS has no float64, which the hypergradient's bookkeeping uses; "
                     "use --device cpu (or auto)"]
    assert not (tmp_path / "run").exists()


def test_cuda_n_becomes_the_current_device(monkeypatch):
    """Pinned memory and new tensors then go to GPU N, not GPU 0 (no GPU here: CUDA is faked)."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda")
    assert current == [torch.device("cuda", 1)]
