"""Typed run configuration. Defaults are the paper's ImageMol settings (TMLR 2025, §5).

Precedence, lowest first: these defaults, the task's defaults, the preset (``cpu``,
``paper``), a ``--config`` YAML file, ``--set key=value`` overrides. Every key is checked
against these dataclasses, so a misspelt key or a wrong type is a one-line error.
Domain options live under ``options`` and may be written ``<domain>.<option>``.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapweight.errors import TapweightError


def setting(default: Any, text: str) -> Any:
    """A config field and what it means, ``lr: float = setting(0.02, "learning rate")``: the
    text is the field's metadata, which ``tapweight list options`` and the configuration page
    read (`field_help`). A list or dict default is copied for every instance. The domains'
    option dataclasses document their fields the same way."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class LevelConfig:
    """Optimizer, schedule and batch size of one level."""

    optimizer: str = setting("sgd", "sgd | adam | adamw")
    lr: float = setting(0.02, "learning rate (the scheduler's start)")
    momentum: float = setting(0.9, "SGD only")
    weight_decay: float = setting(1e-5, "weight decay (1e-5: ImageMol's SGD setting)")
    betas: list[float] = setting([0.9, 0.999], "Adam(W) only")
    scheduler: str = setting("step", "constant | step | warmup | cosine")
    step_size: int = setting(100, "StepLR(100, 0.9), as the reference code")
    decay: float = setting(0.9, "the step schedule's factor every step_size steps")
    warmup_steps: int = setting(0, "linear warm-up for \"warmup\" and \"cosine\"")
    batch_size: int = setting(64, "examples per step (global: split over torchrun's processes)")


@dataclass
class PretrainConfig(LevelConfig):
    """Level I: θ ← θ − η₁ ∇ Σ_k λ_k L_k(θ; D_pt)."""

    lr: float = 0.02
    batch_size: int = 1024
    accumulate: int = setting(1, "micro-batches per level-I step (batch_size is per micro-batch)")


@dataclass
class FinetuneConfig(LevelConfig):
    """Level II: w ← w − η₂ ∇ [L_ft(w; D_train) + γ‖w_b − θ‖²]."""

    lr: float = setting(0.05, "learning rate, the paper's level II rate for ImageMol")
    gamma: float = setting(1e-3, "proximal strength γ, the paper's value for ImageMol")


@dataclass
class ReweightConfig(LevelConfig):
    """Level III: α ← α − η₃ ∂L_val/∂α, λ = softmax(α); the hypergradient: method/hypergrad.py."""

    lr: float = setting(200.0, "learning rate of α, the reference code's (Betty darts scale)")
    momentum: float = setting(0.0, "SGD only (none on α, as the reference code)")
    weight_decay: float = setting(0.0, "weight decay on α (none, as the reference code)")
    hypergrad: str = setting("auto",
        "auto (the cheapest estimator that meets the default's accuracy criterion; the run's log says which and why) "
        "| fd-forward | fd | jvp | neumann | cg | a plugin's (`tapweight list estimators`)")
    scale: str = setting("reference", "reference (Betty darts, no η₁η₂) | exact (× η₁η₂)")
    fd_radius: float = setting(0.001,
        "‖ε·direction‖ of the finite differences: docs/benchmarks.md, \"The default estimator\"")
    preconditioner: str = setting("exact", "exact (Adam's step differentiated) | identity (every step as SGD)")
    val_loss: str = setting("plain",
        "plain | offset_free: L_val with each label's offset refitted on the validation batch (bce tasks; under "
        "torchrun on each rank's shard), so that a label prior that differs between the train and validation "
        "splits, as on a scaffold split, does not count")
    hyper_fraction: float = setting(1.0, "share of each level I batch the directional derivative reads")
    unroll: int = setting(1, "level I and II steps per level III step (> 1: SGD only, exact reverse mode)")
    every: int = setting(1, "level III on every k-th global step only (the others: levels I and II), α's rate "
                            "× k: docs/benchmarks.md, \"A hypergradient every k steps\"")
    iterations: int = setting(5, "Neumann terms / CG iterations, per inverse")
    neumann_alpha: float = setting(0.0, "step of the Neumann series, < 2/‖H‖ (0: 1/‖H‖ by power iteration)")
    curvature_iterations: int = setting(10, "power iterations that estimate ‖H‖ for neumann_alpha = 0")
    cg_tol: float = setting(1e-4, "relative residual at which CG stops")


@dataclass
class FinalConfig(LevelConfig):
    """The re-finetune of the final θ: train split, select on val, score on test."""

    lr: float = 0.01
    epochs: int = setting(30, "epochs of the final fine-tune; the best validation epoch is kept")
    patience: int = setting(0, "stop after this many epochs without a better val score (0: never)")


@dataclass
class RunConfig:
    domain: str = setting("", "the domain (tapweight list domains); set by `tapweight run DOMAIN TASK`")
    task: str = setting("", "the domain's task (tapweight list tasks)")
    method: str = setting("tapweight", "a registered weighting, NAME or NAME:ARG (`tapweight list methods`)")
    objectives: list[str] = setting([], "empty: the domain's defaults")
    weights: list[float] = setting([], "λ for \"fixed\"")
    weighting: dict[str, Any] = setting({}, "method -> its options: weighting.cosine.lr=0.1")
    backbone: str = setting("", "empty: the domain's default")
    head: str = setting("", "empty: the domain's default")
    init: str = setting("", "pretrained backbone checkpoint (domain-specific formats)")
    steps: int = setting(3000, "global steps (each: `unroll` level I+II steps and one level III); tasks set their own")
    seed: int = setting(0, "seeds the split, the initial weights and the batch order")
    seeds: list[int] = setting([], "several: one run each, mean ± std")
    device: str = setting("auto", "auto | cpu | cuda | cuda:1 ...")
    deterministic: bool = setting(False, "deterministic kernels (cuDNN's, torch.use_deterministic_algorithms): "
                                  "the same bytes on a rerun on CUDA")
    amp: str = setting("no", "no | bf16 | fp16: autocast (and a GradScaler for fp16) on any device")
    data: str = setting("", "labelled data file or folder; empty: data dir or download")
    corpus: str = setting("", "pretraining corpus file; empty: the task's training inputs (TAPT)")
    split: str = setting("", "empty: the task's split")
    num_workers: int = setting(0, "DataLoader worker processes per stream (0: in the main process)")
    log_every: int = setting(10, "steps between log lines (--quiet) and between the bar's loss averages")
    report_to: list[str] = setting([], "trackers: tensorboard, mlflow, a plugin's")
    checkpoint_every: int = setting(0, "steps between checkpoints (0: only at the end and on time)")
    checkpoint_minutes: float = setting(5.0, "also checkpoint when this long has passed (0: never on time)")
    keep_checkpoint: bool = setting(False,
        "keep a finished seed's checkpoint.pt (the engine's full state, for an exact resume); false: it is deleted "
        "once the seed's final model and metrics.json are written (resume skips the seed)")
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    options: Any = setting(None, "the domain's option dataclass")


#: the levels' sections of a RunConfig and their dataclasses
LEVELS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "reweight": ReweightConfig, "final": FinalConfig}


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


def build_config(options: type | None, layers: list[tuple[str, DictConfig]], check: bool = True) -> RunConfig:
    """Merge named layers, lowest precedence first, over the defaults; validate the result
    (``check``; ``tapweight show`` reads a config its run already validated, and the check
    would import torch for the estimator registry).

    A wrong key or type names the layer it came from.
    """
    merged = OmegaConf.structured(RunConfig(options=options() if options else None))
    for name, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise TapweightError(f"bad config ({name}): {_one_line(err)}") from None
    cfg = OmegaConf.to_object(merged)
    if check:
        validate(cfg)
    return cfg


#: the largest α learning rate accepted: beyond it one step moves λ = softmax(α) onto a
#: single objective whatever the hypergradient (the paper uses 200 with SGD, 1 with Adam)
MAX_REWEIGHT_LR = 1e6


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TapweightError(message)


def _finite(node: Any, prefix: str = "") -> None:
    """Every float in the config (domain options included) is a finite number."""
    if is_dataclass(node):
        for f in fields(node):
            _finite(getattr(node, f.name), f"{prefix}{f.name}.")
    elif isinstance(node, (list, tuple)):
        for value in node:
            _finite(value, prefix)
    elif isinstance(node, float):
        _check(math.isfinite(node), f"{prefix[:-1]} must be a finite number, got {node}")


def _validate_level(name: str, level: LevelConfig) -> None:
    _check(level.batch_size >= 1, f"{name}.batch_size must be >= 1, got {level.batch_size}")
    _check(level.lr >= 0, f"{name}.lr must be >= 0, got {level.lr}")
    _check(level.optimizer in ("sgd", "adam", "adamw"),
           f"{name}.optimizer must be sgd, adam or adamw, got '{level.optimizer}'")
    _check(level.scheduler in ("constant", "step", "warmup", "cosine"),
           f"{name}.scheduler must be constant, step, warmup or cosine, got '{level.scheduler}'")
    _check(0 <= level.momentum < 1, f"{name}.momentum must be in [0, 1), got {level.momentum}")
    _check(level.weight_decay >= 0, f"{name}.weight_decay must be >= 0, got {level.weight_decay}")
    _check(len(level.betas) == 2 and all(0 <= b < 1 for b in level.betas),
           f"{name}.betas must be two numbers in [0, 1), e.g. [0.9,0.999]; got {level.betas}")
    _check(level.step_size >= 1, f"{name}.step_size must be >= 1, got {level.step_size}")
    _check(0 < level.decay <= 1, f"{name}.decay must be in (0, 1], got {level.decay}")
    _check(level.warmup_steps >= 0, f"{name}.warmup_steps must be >= 0, got {level.warmup_steps}")


def validate(cfg: RunConfig) -> None:
    """Range checks the types alone cannot express."""
    _finite(cfg)
    _check(cfg.steps >= 1, f"steps must be >= 1, got {cfg.steps}")
    for seed in [cfg.seed, *cfg.seeds]:
        _check(0 <= seed < 2**32, f"seeds must be in 0..2^32-1, got {seed}")
    _check(cfg.log_every >= 1, f"log_every must be >= 1 (steps between log lines), got {cfg.log_every}")
    _check(cfg.checkpoint_every >= 0,
           f"checkpoint_every must be >= 0 (0: only at the end), got {cfg.checkpoint_every}")
    _check(cfg.checkpoint_minutes >= 0,
           f"checkpoint_minutes must be >= 0 (0: not on time), got {cfg.checkpoint_minutes}")
    _check(cfg.num_workers >= 0, f"num_workers must be >= 0, got {cfg.num_workers}")
    for name in ("pretrain", "finetune", "reweight", "final"):
        _validate_level(name, getattr(cfg, name))
    _check(cfg.final.epochs >= 1, f"final.epochs must be >= 1, got {cfg.final.epochs}")
    _check(cfg.final.patience >= 0, f"final.patience must be >= 0 (0: never stop early), "
                                    f"got {cfg.final.patience}")
    _check(cfg.finetune.gamma >= 0, f"finetune.gamma must be >= 0, got {cfg.finetune.gamma}")
    _check(cfg.pretrain.accumulate >= 1 and cfg.reweight.unroll >= 1,
           "pretrain.accumulate and reweight.unroll must be >= 1")
    r = cfg.reweight
    _check(r.lr <= MAX_REWEIGHT_LR,
           f"reweight.lr {r.lr:g} is above {MAX_REWEIGHT_LR:g}: one step would put all weight on one "
           "objective; the paper uses 200 (SGD) or 1 (Adam)")
    _check(cfg.amp in ("no", "bf16", "fp16"), f"amp must be no, bf16 or fp16, got '{cfg.amp}'")
    validate_hypergradient(cfg)
    # the method itself is checked against the registry when the job is resolved (job/seed.py)
    _check(all(isinstance(v, dict) for v in cfg.weighting.values()),
           "weighting takes each method's options: --set weighting.<method>.<option>=value")
    _check(not (any(w < 0 for w in cfg.weights) or (cfg.weights and sum(cfg.weights) <= 0)),
           f"weights must be >= 0 with a positive sum, got {cfg.weights}")


def check_options(domain: str, options: Any, rules: dict[str, str]) -> None:
    """Range checks of a domain's options, for the options dataclass's ``__post_init__``
    (it runs when the config is built, so a bad value is a one-line error before any work).

    ``rules`` map a field to ``">= 1"``, ``"> 0"``, ``"<= 5"``, ``"< 1"`` or an interval
    ``"in [0, 1)"`` (square bracket: bound included; round: excluded)::

        def __post_init__(self):
            check_options("tabular", self, {"hidden": ">= 1", "dropout": "in [0, 1)"})
    """
    for name, rule in rules.items():
        value = getattr(options, name)
        if not _satisfies(value, rule):
            raise TapweightError(f"{domain}.{name} must be {rule}, got {value}")


def _satisfies(value: float, rule: str) -> bool:
    if compare := re.fullmatch(r"(>=|>|<=|<) (\S+)", rule):
        op, bound = compare.group(1), float(compare.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
    if interval := re.fullmatch(r"in ([\[(])(\S+), (\S+)([\])])", rule):
        left, low, high, right = interval.groups()
        above = value >= float(low) if left == "[" else value > float(low)
        below = value <= float(high) if right == "]" else value < float(high)
        return above and below
    raise ValueError(f"unknown range rule '{rule}'")


def validate_hypergradient(cfg: RunConfig) -> None:
    """The hypergradient's settings; the estimator's name and what it cannot compute are the
    registry's to say (tapweight/method/estimators.py, imported here: it needs torch)."""
    from tapweight.method import estimators

    r = cfg.reweight
    _check(r.scale in ("reference", "exact"), f"reweight.scale must be reference or exact, got '{r.scale}'")
    _check(r.preconditioner in ("exact", "identity"),
           f"reweight.preconditioner must be exact or identity, got '{r.preconditioner}'")
    _check(r.val_loss in ("plain", "offset_free"),
           f"reweight.val_loss must be plain or offset_free, got '{r.val_loss}'")
    _check(0 < r.hyper_fraction <= 1, f"reweight.hyper_fraction must be in (0, 1], got {r.hyper_fraction}")
    _check(r.fd_radius > 0, f"reweight.fd_radius must be > 0, got {r.fd_radius}")
    _check(r.iterations >= 1, f"reweight.iterations must be >= 1, got {r.iterations}")
    _check(r.curvature_iterations >= 1, f"reweight.curvature_iterations must be >= 1, got {r.curvature_iterations}")
    _check(r.neumann_alpha >= 0, f"reweight.neumann_alpha must be >= 0 (0: from a power iteration), "
                                 f"got {r.neumann_alpha}")
    _check(r.cg_tol > 0, f"reweight.cg_tol must be > 0, got {r.cg_tol}")
    _check(r.every >= 1, f"reweight.every must be >= 1 (global steps per level III step), got {r.every}")
    _check(r.every == 1 or r.unroll == 1, f"reweight.every={r.every} and reweight.unroll={r.unroll}: set one "
                                          "of them to 1 (unroll differentiates through the steps between)")
    estimators.check(cfg)


def field_help(cls: type) -> dict[str, str]:
    """Each field of the dataclass ``cls`` with its help text (`setting`): its own, or,
    for a field a subclass redefines without one, its base's; ``""`` for a field without any."""
    found = {}
    for f in fields(cls):
        owners = [k for k in cls.__mro__ if f.name in getattr(k, "__dataclass_fields__", {})]
        texts = (k.__dataclass_fields__[f.name].metadata.get("help", "") for k in owners)
        found[f.name] = next((t for t in texts if t), "")
    return found


def option_rows(domain: str = "", options: type | None = None) -> list[tuple[str, str, str]]:
    """``(key, default, description)`` of every config key: the run's, each level's
    (``pretrain.lr``...), then ``options``' as ``<domain>.<field>``."""
    rows = []

    def add(cls: type, prefix: str) -> None:
        described = field_help(cls)
        for f in fields(cls):
            if f.name in LEVELS or f.name == "options":
                continue
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            rows.append((f"{prefix}{f.name}", repr(default), described[f.name]))

    add(RunConfig, "")
    for level, cls in LEVELS.items():
        add(cls, f"{level}.")
    if options is not None:
        add(options, f"{domain}.")
    return rows


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
