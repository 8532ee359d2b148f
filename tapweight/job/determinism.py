"""Deterministic kernels for a run (``deterministic=true``).

On the CPU a rerun gives the same bytes without them (docs/reproducibility.md). On CUDA,
cuDNN picks its convolution algorithms by timing them (``cudnn.benchmark``) and several
kernels add in a different order on each call (atomic adds, cuBLAS's split reductions);
the same bytes then need cuDNN's deterministic algorithms, torch's deterministic ones (an op
that has none stops the run with torch's error naming it) and cuBLAS's fixed workspace.
"""

from __future__ import annotations

import contextlib
import os

import torch

#: the cuBLAS workspace that ``torch.use_deterministic_algorithms`` requires on CUDA ≥ 10.2
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic(enabled: bool):
    """The block with deterministic kernels when ``enabled``; every setting it changed (cuDNN's
    flags, torch's, ``CUBLAS_WORKSPACE_CONFIG``) is restored as it was."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, algorithms, warn_only, workspace = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace
