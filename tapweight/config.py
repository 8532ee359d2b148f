"""Typed run configuration. Defaults are the paper's ImageMol settings (TMLR 2025, §5).

Precedence, lowest first: these defaults, the task's defaults, the preset (``cpu``,
``paper``), a ``--config`` YAML file, ``--set key=value`` overrides. Every key is checked
against these dataclasses, so a misspelt key or a wrong type is a one-line error.
Domain options live under ``options`` and may be written ``<domain>.<option>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tapweight.errors import TapweightError


@dataclass
class LevelConfig:
    """Optimizer, schedule and batch size of one level."""

    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.02  # learning rate (the scheduler's start)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-5  # weight decay (1e-5: ImageMol's SGD setting)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam(W) only
    scheduler: str = "step"  # constant | step | warmup | cosine
    step_size: int = 100  # StepLR(100, 0.9), as the reference code
    decay: float = 0.9  # the step schedule's factor every step_size steps
    warmup_steps: int = 0  # linear warm-up for "warmup" and "cosine"
    batch_size: int = 64  # examples per step (global: split over torchrun's processes)


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
    """Level III: α ← α − η₃ ∂L_val/∂α, λ = softmax(α); the hypergradient: method/hypergrad.py."""

    lr: float = 200.0  # the reference code's α learning rate (Betty darts scale)
    momentum: float = 0.0
    weight_decay: float = 0.0
    # auto (the cheapest that meets the default's accuracy criterion) | fd-forward | fd | jvp | neumann | cg:
    # tapweight/method/estimators.py, where each is registered
    hypergrad: str = "auto"
    scale: str = "reference"  # reference (Betty darts, no η₁η₂) | exact (× η₁η₂)
    fd_radius: float = 0.001  # ‖ε·direction‖ of the finite differences: docs/benchmarks.md, "The default estimator"
    preconditioner: str = "exact"  # exact (Adam's step differentiated) | identity (every step as SGD)
    # plain | offset_free: L_val with each label's offset refitted on the validation batch
    # (bce tasks; under torchrun on each rank's shard), so that a label prior that differs
    # between the train and validation splits, as on a scaffold split, does not count
    val_loss: str = "plain"
    hyper_fraction: float = 1.0  # share of each level I batch the directional derivative reads
    unroll: int = 1  # level I and II steps per level III step (> 1: SGD only, exact reverse mode)
    # level III on every k-th global step only (the others: levels I and II), α's rate × k:
    # docs/benchmarks.md, "A hypergradient every k steps"
    every: int = 1
    iterations: int = 5  # Neumann terms / CG iterations, per inverse
    neumann_alpha: float = 0.0  # step of the Neumann series, < 2/‖H‖ (0: 1/‖H‖ by power iteration)
    curvature_iterations: int = 10  # power iterations that estimate ‖H‖ for neumann_alpha = 0
    cg_tol: float = 1e-4  # relative residual at which CG stops


@dataclass
class FinalConfig(LevelConfig):
    """The re-finetune of the final θ: train split, select on val, score on test."""

    lr: float = 0.01
    epochs: int = 30  # epochs of the final fine-tune; the best validation epoch is kept
    patience: int = 0  # stop after this many epochs without a better val score (0: never)


@dataclass
class RunConfig:
    domain: str = ""  # the domain (tapweight list domains); set by `tapweight run DOMAIN TASK`
    task: str = ""  # the domain's task (tapweight list tasks)
    method: str = "tapweight"  # a registered weighting, NAME or NAME:ARG (`tapweight list methods`)
    objectives: list[str] = field(default_factory=list)  # empty: the domain's defaults
    weights: list[float] = field(default_factory=list)  # λ for "fixed"
    weighting: dict[str, Any] = field(default_factory=dict)  # method -> its options: weighting.cosine.lr=0.1
    backbone: str = ""  # empty: the domain's default
    head: str = ""  # empty: the domain's default
    init: str = ""  # pretrained backbone checkpoint (domain-specific formats)
    steps: int = 3000  # global steps (each: `unroll` level I+II steps and one level III); tasks set their own
    seed: int = 0  # seeds the split, the initial weights and the batch order
    seeds: list[int] = field(default_factory=list)  # several: one run each, mean ± std
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps ...
    amp: str = "no"  # no | bf16 | fp16: autocast (and a GradScaler for fp16) on any device
    data: str = ""  # labelled data file or folder; empty: data dir or download
    corpus: str = ""  # pretraining corpus file; empty: the task's training inputs (TAPT)
    split: str = ""  # empty: the task's split
    num_workers: int = 0  # DataLoader worker processes per stream (0: in the main process)
    log_every: int = 10  # steps between log lines (--quiet) and between the bar's loss averages
    report_to: list[str] = field(default_factory=list)  # trackers: tensorboard, mlflow, a plugin's
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end and on time)
    checkpoint_minutes: float = 5.0  # also checkpoint when this long has passed (0: never on time)
    # keep a finished seed's checkpoint.pt (the engine's full state, for an exact resume); false:
    # it is deleted once the seed's final model and metrics.json are written (resume skips the seed)
    keep_checkpoint: bool = False
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    options: Any = None  # the domain's option dataclass


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
    """Each field of the dataclass ``cls`` (and of its bases) with its description: the comment
    at the end of its line, after the comment lines just above it (how this module and the
    domains' option dataclasses document a key; ``tapweight list options`` and the docs read it).
    A subclass's field without one keeps its base's; a field without any maps to ``""``."""
    import inspect
    import io
    import tokenize

    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        if not is_dataclass(klass):
            continue
        above, name, text = [], None, {}
        for token in tokenize.generate_tokens(io.StringIO(inspect.getsource(klass)).readline):
            if token.type == tokenize.NAME and name is None and token.start[1] == 4:
                name = token.string
            elif token.type == tokenize.COMMENT:
                (above if name is None else text.setdefault(name, [])).append(token.string.lstrip("# "))
            elif token.type == tokenize.NEWLINE:
                if name is not None:
                    text[name] = [*above, *text.get(name, [])]
                above, name = [], None
            elif token.type == tokenize.NL and name is None and not token.line.strip():
                above = []  # a blank line: the comments above it describe no field
        names = {f.name for f in fields(klass)}
        found.update({k: " ".join(v) for k, v in text.items() if k in names and v})
    return {f.name: found.get(f.name, "") for f in fields(cls)}


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
