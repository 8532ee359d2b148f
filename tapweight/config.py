"""Typed run configuration. Defaults are the paper's ImageMol settings (TMLR 2025, §5).

Precedence, lowest first: these defaults, the task's defaults, the preset (``cpu``,
``paper``), a ``--config`` YAML file, ``--set key=value`` overrides. Every key is checked
against these dataclasses, so a misspelt key or a wrong type is a one-line error.
Domain options live under ``options`` and may be written ``<domain>.<option>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapweight.errors import TapweightError


@dataclass
class LevelConfig:
    """Optimizer, schedule and batch size of one level."""

    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.02
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-5  # ImageMol's SGD setting
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam(W) only
    scheduler: str = "step"  # constant | step | warmup | cosine
    step_size: int = 100  # StepLR(100, 0.9), as the reference code
    decay: float = 0.9
    warmup_steps: int = 0  # linear warm-up for "warmup" and "cosine"
    batch_size: int = 64


@dataclass
class PretrainConfig(LevelConfig):
    """Level I: θ ← θ − η₁ ∇ Σ_k λ_k L_k(θ; D_pt)."""

    lr: float = 0.02
    batch_size: int = 1024
    accumulate: int = 1  # micro-batches per level-I step (batch_size is per micro-batch)


@dataclass
class FinetuneConfig(LevelConfig):
    """Level II: w ← w − η₂ ∇ [L_ft(w; D_train) + γ‖w_b − θ‖²]."""

    lr: float = 0.05  # the paper's level II rate for ImageMol
    gamma: float = 1e-3  # proximal strength γ, the paper's value for ImageMol


@dataclass
class ReweightConfig(LevelConfig):
    """Level III: α ← α − η₃ ∂L_val/∂α, λ = softmax(α); the hypergradient: hypergrad.py."""

    lr: float = 200.0  # the reference code's α learning rate (Betty darts scale)
    momentum: float = 0.0
    weight_decay: float = 0.0
    hypergrad: str = "auto"  # auto (fd; jvp under amp or unroll > 1) | fd | jvp | neumann | cg
    scale: str = "reference"  # reference (Betty darts, no η₁η₂) | exact (× η₁η₂)
    fd_radius: float = 0.01  # ‖ε·direction‖ of the finite difference, as Betty's darts
    fd_scheme: str = "central"  # central (two forwards) | forward (one, reusing level I's losses)
    hyper_fraction: float = 1.0  # share of each level I batch the directional derivative reads
    unroll: int = 1  # level I and II steps per level III step (> 1: SGD only, exact reverse mode)
    iterations: int = 5  # Neumann terms / CG iterations, per inverse
    neumann_alpha: float = 0.0  # step of the Neumann series, < 2/‖H‖ (0: 1/‖H‖ by power iteration)
    curvature_iterations: int = 10  # power iterations that estimate ‖H‖ for neumann_alpha = 0
    cg_tol: float = 1e-4  # relative residual at which CG stops


@dataclass
class FinalConfig(LevelConfig):
    """The re-finetune of the final θ: train split, select on val, score on test."""

    lr: float = 0.01
    epochs: int = 30
    patience: int = 0  # stop after this many epochs without a better val score (0: never)


@dataclass
class RunConfig:
    domain: str = ""
    task: str = ""
    method: str = "tapweight"  # tapweight | uniform | fixed | single:<objective> | none
    objectives: list[str] = field(default_factory=list)  # empty: the domain's defaults
    weights: list[float] = field(default_factory=list)  # λ for "fixed"
    backbone: str = ""  # empty: the domain's default
    head: str = ""  # empty: the domain's default
    init: str = ""  # pretrained backbone checkpoint (domain-specific formats)
    steps: int = 3000  # global steps (each: `unroll` level I+II steps and one level III); tasks set their own
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # several: one run each, mean ± std
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps ...
    amp: str = "no"  # no | bf16 | fp16: autocast (and a GradScaler for fp16) on any device
    data: str = ""  # labelled data file or folder; empty: data dir or download
    corpus: str = ""  # pretraining corpus file; empty: the task's training inputs (TAPT)
    split: str = ""  # empty: the task's split
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    options: Any = None  # the domain's option dataclass


METHODS = ("tapweight", "uniform", "fixed", "single:<objective>", "none")
HYPERGRADS = ("auto", "fd", "jvp", "neumann", "cg")


def _one_line(err: OmegaConfBaseException) -> str:
    return str(err).splitlines()[0]


def _options_key(key: str, domain: str) -> str:
    """Let ``<domain>.x`` stand for ``options.x``."""
    return "options" + key[len(domain):] if domain and (key == domain or key.startswith(f"{domain}.")) else key


def layer_from_dict(values: dict[str, Any], domain: str) -> DictConfig:
    """Dotted keys with Python values (task defaults, presets, command-line options)."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = _options_key(key, domain).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return OmegaConf.create(nested)


def layer_from_file(path: str, domain: str) -> DictConfig:
    """A nested YAML file, e.g. a saved ``config.yaml``; ``<domain>:`` means ``options:``."""
    if not Path(path).is_file():
        raise TapweightError(f"config file '{path}' does not exist")
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:
        raise TapweightError(f"config file '{path}' is not valid YAML: {_first_line(err)}") from None
    if not isinstance(loaded, dict):
        raise TapweightError(f"config file '{path}' must hold a mapping of keys to values")
    return OmegaConf.create({_options_key(k, domain): v for k, v in loaded.items()})


def layer_from_sets(sets: list[str], domain: str) -> DictConfig:
    """``key=value`` strings as typed after ``--set`` (values parsed as YAML scalars/lists)."""
    items = []
    for item in sets:
        if "=" not in item:
            raise TapweightError(f"--set takes key=value, got '{item}'")
        key, value = item.split("=", 1)
        items.append(f"{_options_key(key.strip(), domain)}={value}")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as err:
        raise TapweightError(f"bad --set value: {_one_line(err)}") from None


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def build_config(options: type | None, layers: list[tuple[str, DictConfig]]) -> RunConfig:
    """Merge named layers, lowest precedence first, over the defaults; validate the result.

    A wrong key or type names the layer it came from.
    """
    merged = OmegaConf.structured(RunConfig(options=options() if options else None))
    for name, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise TapweightError(f"bad config ({name}): {_one_line(err)}") from None
    cfg = OmegaConf.to_object(merged)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Range checks the types alone cannot express."""
    if cfg.steps < 1:
        raise TapweightError(f"steps must be >= 1, got {cfg.steps}")
    for name in ("pretrain", "finetune", "reweight", "final"):
        level: LevelConfig = getattr(cfg, name)
        if level.batch_size < 1:
            raise TapweightError(f"{name}.batch_size must be >= 1, got {level.batch_size}")
        if level.lr < 0:
            raise TapweightError(f"{name}.lr must be >= 0, got {level.lr}")
        if level.optimizer not in ("sgd", "adam", "adamw"):
            raise TapweightError(f"{name}.optimizer must be sgd, adam or adamw, got '{level.optimizer}'")
        if level.scheduler not in ("constant", "step", "warmup", "cosine"):
            raise TapweightError(
                f"{name}.scheduler must be constant, step, warmup or cosine, got '{level.scheduler}'")
    if cfg.finetune.gamma < 0:
        raise TapweightError(f"finetune.gamma must be >= 0, got {cfg.finetune.gamma}")
    if cfg.pretrain.accumulate < 1 or cfg.reweight.unroll < 1:
        raise TapweightError("pretrain.accumulate and reweight.unroll must be >= 1")
    if cfg.amp not in ("no", "bf16", "fp16"):
        raise TapweightError(f"amp must be no, bf16 or fp16, got '{cfg.amp}'")
    validate_hypergradient(cfg)
    method = cfg.method
    if not (method in ("tapweight", "uniform", "fixed", "none") or method.startswith("single:")):
        raise TapweightError(f"unknown method '{method}'; methods: {', '.join(METHODS)}")
    if method == "fixed" and not cfg.weights:
        raise TapweightError("method 'fixed' needs weights: --set weights=[0.5,0.3,0.2]")
    if any(w < 0 for w in cfg.weights) or (cfg.weights and sum(cfg.weights) <= 0):
        raise TapweightError(f"weights must be >= 0 with a positive sum, got {cfg.weights}")


def validate_hypergradient(cfg: RunConfig) -> None:
    """Refuse the settings whose hypergradient the engine cannot compute correctly."""
    r = cfg.reweight
    if r.hypergrad not in HYPERGRADS:
        raise TapweightError(f"reweight.hypergrad must be one of {', '.join(HYPERGRADS)}, got '{r.hypergrad}'")
    if r.scale not in ("reference", "exact"):
        raise TapweightError(f"reweight.scale must be reference or exact, got '{r.scale}'")
    if r.fd_scheme not in ("central", "forward"):
        raise TapweightError(f"reweight.fd_scheme must be central or forward, got '{r.fd_scheme}'")
    if not 0 < r.hyper_fraction <= 1:
        raise TapweightError(f"reweight.hyper_fraction must be in (0, 1], got {r.hyper_fraction}")
    if not r.fd_radius > 0:
        raise TapweightError(f"reweight.fd_radius must be > 0, got {r.fd_radius}")
    if r.iterations < 1 or r.curvature_iterations < 1:
        raise TapweightError("reweight.iterations and reweight.curvature_iterations must be >= 1")
    if r.fd_scheme == "forward" and (r.hyper_fraction < 1 or cfg.amp != "no"
                                     or r.hypergrad not in ("auto", "fd")):
        raise TapweightError("reweight.fd_scheme=forward reuses level I's own float32 loss values: it needs "
                             "reweight.hypergrad=fd, reweight.hyper_fraction=1 and amp=no")
    adam = [name for name in ("pretrain", "finetune") if getattr(cfg, name).optimizer != "sgd"]
    if r.unroll > 1 and adam and r.hypergrad not in ("neumann", "cg"):
        raise TapweightError(f"reweight.unroll={r.unroll} is differentiated exactly through SGD steps only, "
                             f"and {' and '.join(adam)} use {getattr(cfg, adam[0]).optimizer}: set "
                             "reweight.unroll=1 (exact for Adam too) or the optimizers to sgd")


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
