"""What plugins register: small frozen dataclasses, one per registry.

The core never imports a domain. A domain arrives as these specs through the hooks in
`tapweight.plugin.hookspecs`; every name is namespaced by its domain (``mol.jpp``,
``nlp.mlm``), and the core's own generic pieces live under ``core.``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: registering a plugin must not import torch
    import numpy as np
    from torch import nn
    from torch.utils.data import Dataset


@dataclass(frozen=True)
class Table:
    """A labelled data set as loaded from disk, before any split.

    ``inputs`` holds one raw example per row (a SMILES string, a sentence or a pair of them,
    a feature vector); ``labels`` is float ``[N, T]`` with NaN where a label is missing.
    """

    inputs: Sequence[Any]
    labels: np.ndarray  # [N, T] float, NaN = missing
    label_names: tuple[str, ...]
    source: str = ""  # where it came from, for the run log

    def __post_init__(self):
        if self.labels.ndim != 2 or len(self.labels) != len(self.inputs):
            raise ValueError(f"labels must be [N, T] with N={len(self.inputs)}, got {self.labels.shape}")


@dataclass(frozen=True)
class Split:
    """Row indices of a `Table` for the three splits."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class DomainData:
    """Everything the engine iterates over, built by `Domain.build_data`.

    ``corpus`` feeds level I (pretraining batches, any structure the objectives accept);
    ``train``/``val``/``test`` yield ``(inputs, labels)`` pairs for levels II and III and
    the final fine-tune. Each collate function turns a list of items into a batch.
    `Domain.build_corpus` (``tapweight pretrain``: no task) fills the corpus part only.
    ``files`` names what else the data was encoded with (a tokenizer trained on the corpus):
    ``tapweight pretrain`` copies each into its run folder, beside the encoder.
    """

    corpus: Dataset
    corpus_collate: Callable[[list], Any]
    train: Dataset | None = None
    val: Dataset | None = None
    test: Dataset | None = None
    task_collate: Callable[[list], Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # facts for the run log (skipped rows...)
    files: Mapping[str, Path] = field(default_factory=dict)  # name in the run folder -> file or folder
    predictor: Predictor | None = None  # how new inputs are prepared (domains that support predict)


@dataclass(frozen=True)
class Inputs:
    """Unlabelled inputs read for ``tapweight predict``: one entry per data line of the file,
    a blank line included (as a row that cannot be scored), so that row numbers stay the file's.

    ``errors[i]`` is ``""`` when row i can be scored, else why not (a SMILES RDKit cannot
    parse, an empty text, a missing feature): such a row gets an empty prediction and its
    reason; the other rows are scored.
    """

    inputs: Sequence[Any]
    errors: Sequence[str]
    source: str = ""

    def __post_init__(self):
        if len(self.errors) != len(self.inputs):
            raise ValueError(f"one error entry per input: {len(self.errors)} for {len(self.inputs)}")

    @property
    def valid(self) -> np.ndarray:
        """Indices of the rows that can be scored."""
        import numpy as np

        return np.array([i for i, e in enumerate(self.errors) if not e], dtype=np.int64)


def _nothing_to_save(folder: Path) -> None:
    """A domain whose preparation of inputs depends on the config alone (e.g. rendering)."""


@dataclass(frozen=True)
class Predictor:
    """How a run's final model scores new raw inputs, prepared exactly as its training data.

    Built twice: by ``Domain.build_data`` as ``DomainData.predictor``, holding what it fitted
    on the train split (a tokenizer, a feature scaler), whose ``save(folder)`` the runner
    calls beside the final model; and by ``Domain.load_predictor(cfg, folder)`` from what
    ``save`` wrote, for ``tapweight predict`` and ``tapweight export``. Both must prepare the
    same inputs into the same batches.

    ``read(path)`` reads the unlabelled inputs of a file (`Inputs`); ``dataset(inputs)``
    turns valid raw inputs into items that ``collate`` batches into ``(model inputs,
    labels)`` (the labels are placeholders, e.g. NaN; usually ``collate`` is the domain's
    ``task_collate``); ``backbone()`` is a new backbone of the run's architecture, into which
    the core loads the saved weights; ``save(folder)`` writes what ``load_predictor`` needs.
    """

    read: Callable[[str], Inputs]
    dataset: Callable[[Sequence[Any]], Dataset]
    collate: Callable[[list], Any]
    backbone: Callable[[], nn.Module]
    save: Callable[[Path], None] = _nothing_to_save


@dataclass(frozen=True)
class ExportFormat:
    """``tapweight export RUN --format NAME``: a backbone in a format another library loads.

    ``write(backbone, head, folder, out) -> [paths]`` writes ``backbone`` (its weights loaded:
    the continued-pretrained encoder, or the fine-tuned one) and, for a fine-tuned export, the
    task ``head`` (else None) into the folder ``out``, and returns the files it wrote;
    ``folder`` is the seed's predictor folder (what ``Predictor.save`` wrote, e.g. a tokenizer).
    """

    name: str
    write: Callable[[nn.Module, nn.Module | None, Path, Path], list[Path]]
    description: str = ""


@dataclass(frozen=True)
class Domain:
    """A family of data, models and objectives (molecules, text, tables...).

    ``options`` is a dataclass whose fields become ``--set <domain>.<field>=...`` keys;
    ``presets`` map a preset name (``cpu``, ``paper``) to dotted config overrides;
    ``build_data(cfg, table, split, task)`` turns a loaded table into `DomainData`
    (``task`` is the `TaskSpec` being run: its loss says how labels are used);
    ``splits`` map split names to ``fn(table, seed) -> Split``. Optional:
    ``load_predictor(cfg, folder) -> Predictor`` lets ``tapweight predict`` score new inputs
    (``build_data`` then sets ``DomainData.predictor``); ``exports`` are the formats of
    ``tapweight export``.

    ``build_corpus(cfg, path)`` (optional) reads an unlabelled corpus file into
    `DomainData` with only the corpus part, for ``tapweight pretrain`` (base
    pretraining, no task); ``pretrain_presets`` are laid over the preset of the same name
    there (base pretraining's own batch size, rate or objectives).
    """

    name: str
    description: str
    options: type
    backbone: str
    objectives: tuple[str, ...]
    build_data: Callable[[Any, Table, Split, TaskSpec], DomainData]
    splits: Mapping[str, Callable[[Table, int], Split]] = field(default_factory=dict)
    head: str = "core.linear"
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    load_predictor: Callable[[Any, Path], Predictor] | None = None
    exports: Sequence[ExportFormat] = ()
    build_corpus: Callable[[Any, str], DomainData] | None = None
    pretrain_presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class BackboneSpec:
    """``build(cfg, data) -> nn.Module`` whose forward maps inputs to features ``[B, out_dim]``.

    ``data`` is the run's `DomainData`, for backbones whose shape depends on it (an
    input width, a vocabulary). The module must expose ``out_dim``. Objectives may call
    domain-specific methods on it. ``objectives``: what a run with this backbone trains on
    when its config names none (empty: the domain's defaults), for a backbone whose inputs
    the domain's default objectives cannot read (a graph beside images).
    """

    name: str
    build: Callable[[Any, DomainData], nn.Module]
    description: str = ""
    objectives: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectiveSpec:
    """A pretraining objective L_k.

    ``build(backbone, corpus, cfg)`` returns an ``nn.Module`` whose ``forward(backbone,
    batch)`` returns ONE unweighted scalar loss; its own parameters (a classifier, a
    decoder) belong to θ. It may draw random numbers from torch's global generator: the
    engine replays the generator so every evaluation of the same step sees the same draw.
    """

    name: str
    build: Callable[[nn.Module, Dataset, Any], nn.Module]
    description: str = ""


@dataclass(frozen=True)
class HeadSpec:
    """``build(in_dim, n_outputs, cfg) -> nn.Module``: the task head on backbone features."""

    name: str
    build: Callable[[int, int, Any], nn.Module]
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled data set: ``load(cfg) -> Table`` (reads ``cfg.data`` or downloads)."""

    name: str
    load: Callable[[Any], Table]
    description: str = ""


@dataclass(frozen=True)
class LoggerSpec:
    """An experiment tracker a run reports to, chosen with ``--set report_to=[name]``.

    ``build(cfg, folder, step)`` is called once per seed on rank 0 (``folder`` is the seed's
    folder in the run folder, ``step`` the global step the seed starts from: 0, or the
    checkpoint's on ``resume``, past which a tracker that keeps its own history should drop
    what it holds). It returns an object with ``log(values, step)`` (``values``: a dict of
    floats, names like ``lambda/<objective>``) and ``close()``. Names are plain words
    (``tensorboard``, ``mlflow``, ``wandb``), not namespaced by domain.
    """

    name: str
    build: Callable[[Any, Path, int], Any]
    description: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A weighting method, chosen with ``--method NAME`` (``NAME:ARG`` when ``argument`` is set).

    ``build(cfg, argument) -> Weighting`` returns a fresh
    `Weighting` for one seed (``argument``: what
    follows ``NAME:``, ``""`` without). Names are plain words (``tapweight``, ``cosine``), not
    namespaced by domain, and may not contain ``.``, ``/`` or ``:``. ``argument`` names what
    the method takes after the colon (``single``'s ``objective``), or is empty.
    """

    name: str
    build: Callable[[Any, str], Any]
    description: str = ""
    argument: str = ""

    @property
    def usage(self) -> str:
        """How ``--method`` names it: ``single:<objective>``, ``tapweight``."""
        return f"{self.name}:<{self.argument}>" if self.argument else self.name


@dataclass(frozen=True)
class EstimatorSpec:
    """A hypergradient estimator, chosen with ``--set reweight.hypergrad=NAME`` (or by ``auto``).

    ``estimator`` is a subclass of ``tapweight.Estimator`` (or a ``deferred("module:Class")``
    standing for one, so that registering imports no torch); its class attributes say what
    ``auto`` weighs: its ``cost`` (extra forwards of the level I batch), its ``precision``,
    whether it is ``exact``, and in which settings it meets the default's accuracy criterion
    (``default_for``) or cannot run (``refuses``). Names are plain words (``fd``, ``jvp``).
    """

    name: str
    estimator: Any
    description: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task: which domain, data set, split, loss and metric.

    ``loss`` is ``"bce"`` (binary, one logit per label column, NaN masked), ``"ce"``
    (one label column of class ids, ``n_classes`` logits) or ``"mse"`` (regression).
    ``metric`` is the model-selection metric; ``extra_metrics`` are reported beside it.
    ``defaults`` are dotted config values that suit this task (steps, batch sizes); a preset
    overrides them. ``overrides`` are values the task needs whatever the preset (learning
    rates its loss is stable at): applied over the preset, under ``--config`` and the
    command line. ``classes`` name a ``ce`` task's class ids, in id order (for predictions
    people read).

    A task for any labelled file (``custom``) learns its loss, classes and metric from the
    data: ``fit(cfg) -> TaskSpec`` is called with the config of the user's options and
    returns the task to run, with ``fit`` unset; the values it settled from the data (a task
    type, class names) are in its ``defaults``, so that the saved ``config.yaml`` states them
    and ``predict``, ``export`` and ``resume`` fit the same task without reading the data.
    ``title`` names the run in folders and tables (the data file's name), else ``name``.
    """

    domain: str
    name: str
    dataset: str
    split: str
    loss: str
    metric: str
    extra_metrics: tuple[str, ...] = ()
    n_classes: int = 0  # for loss="ce"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    fit: Callable[[Any], TaskSpec] | None = None
    title: str = ""

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.name}"

    @property
    def shown_name(self) -> str:
        """What folders and tables call the run: ``title`` or ``name``."""
        return self.title or self.name
