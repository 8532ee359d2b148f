"""The two models of the three levels.

θ is a `PretrainModel` (backbone θ_b plus each objective's own parameters); w is a
`TaskModel` (backbone w_b plus the task head). Level II ties w_b to θ_b through the
proximal term γ‖w_b − θ_b‖², which is why both backbones must share parameter names.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm

_forward_cache: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tapweight_forward", default=None)


def computed_once(key: Hashable, compute: Callable[[], object]):
    """``compute()``, shared by all objectives of one evaluation of L(θ).

    Objectives often need the same tensor, e.g. the backbone's features of the unaltered
    inputs: the first to ask computes it under ``key``, the others get the same tensor (and
    gradients flow through it to each). The cache lives exactly as long as one
    `PretrainModel` forward, so every evaluation (level I, the hypergradient's
    perturbed forwards, another engine's) computes afresh. Outside such a forward
    (an objective called on its own), ``compute()`` runs every time. Namespace ``key`` like
    your plugin's names (``"mol.clean_features"``): all objectives of θ share one cache.
    """
    cache = _forward_cache.get()
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


class PretrainModel(nn.Module):
    """θ: the backbone and the K objectives; ``forward(batch)`` is the loss vector L(θ) ∈ R^K."""

    def __init__(self, backbone: nn.Module, objectives: Sequence[nn.Module], names: Sequence[str]):
        super().__init__()
        self.backbone = backbone
        self.objectives = nn.ModuleList(objectives)
        self.names = list(names)

    def forward(self, batch) -> torch.Tensor:
        token = _forward_cache.set({})  # computed_once's cache, for this evaluation only
        try:
            losses = [obj(self.backbone, batch).reshape(()) for obj in self.objectives]
        finally:
            _forward_cache.reset(token)
        # half-precision losses (under autocast) are compared in float32 by the hypergradient
        return torch.stack([l.float() if l.dtype in (torch.float16, torch.bfloat16) else l
                            for l in losses])


class TaskModel(nn.Module):
    """w: the backbone and the task head; ``forward(inputs)`` gives the task's outputs."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, inputs) -> torch.Tensor:
        return self.head(self.backbone(inputs))


def backbone_params(model: nn.Module) -> list[nn.Parameter]:
    """The trainable backbone parameters, in a fixed order shared by θ_b and w_b."""
    return [p for _, p in model.backbone.named_parameters() if p.requires_grad]


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module):
    """Batch-norm uses batch statistics but does not update its running averages.

    The hypergradient's extra forwards must not move the running statistics, or each
    global step would count the same batch three times.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


@contextlib.contextmanager
def replay_rng(seed: int, device: torch.device):
    """Run a block with torch's generators seeded by ``seed``, then restore them.

    Every evaluation of a step's objectives (the level I backward, the hypergradient's
    extra forwards) replays the same masks, crops and dropout.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


#: where TF32 is set: each flag of torch's ``fp32_precision`` API with the flags it inherits
#: from while it reads "none" (matrix products; cuDNN's convolutions)
TF32_FLAGS = {"matmul": (torch.backends.cuda.matmul, torch.backends),
              "conv": (torch.backends.cudnn.conv, torch.backends.cudnn, torch.backends)}


def fp32_precision(flag: str) -> str:
    """The precision CUDA's float32 ``flag`` ("matmul", "conv") runs in: "ieee" (full float32),
    "tf32", ... Read through ``fp32_precision``: once anyone sets that API, reading the
    older ``allow_tf32`` flags raises."""
    return next((f.fp32_precision for f in TF32_FLAGS[flag] if f.fp32_precision != "none"), "ieee")


def tf32_allowed() -> bool:
    """Whether CUDA may round float32 matrix products or convolutions to TF32 (or lower)."""
    return any(fp32_precision(flag) != "ieee" for flag in TF32_FLAGS)


@contextlib.contextmanager
def fp32_mode(precision: str):
    """CUDA's float32 matrix products and convolutions in ``precision`` ("ieee": full float32,
    "tf32") for a block; the ``fp32_precision`` flags the block changes are restored as they
    were (a user's "none", "tf32" or the "medium" of ``set_float32_matmul_precision`` included)."""
    leaves = [chain[0] for chain in TF32_FLAGS.values()]
    saved = [leaf.fp32_precision for leaf in leaves]
    try:
        for leaf in leaves:
            leaf.fp32_precision = precision
        yield
    finally:
        for leaf, value in zip(leaves, saved):
            leaf.fp32_precision = value


def full_float32():
    """No TF32 in CUDA's matrix products and convolutions for a block (`fp32_mode`)."""
    return fp32_mode("ieee")


@contextlib.contextmanager
def float32(device: torch.device, tf32: bool = False):
    """float32 arithmetic for a block that the hypergradient differentiates or subtracts:
    autocast off; unless ``tf32``, no TF32 in CUDA's matrix products and convolutions (TF32
    keeps 10 mantissa bits: too few for a finite difference, enough for a derivative
    computed directly); scaled-dot-product attention on its math kernel. The fused attention
    kernels (flash, memory-efficient: CUDA's choice even in float32, and the CPU's without
    dropout) have no forward-mode derivative and no derivative of their backward, which
    ``jvp``, the Hessian-vector products and ``unroll > 1`` take."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, enabled=False))
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        if not tf32:
            stack.enter_context(full_float32())
        yield
