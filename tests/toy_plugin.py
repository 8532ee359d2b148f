"""A throwaway domain that implements every hook, for the core's tests.

Synthetic data from scikit-learn, a two-layer backbone, two objectives (one random, to
exercise the engine's replay of random draws), a plugin command, a predictor (new rows:
a CSV of 8 numbers per line), an export format (the backbone's state dict), an
unlabelled corpus reader (``.npy`` rows, for ``tapweight pretrain``), and a weighting method
with state of its own (``toy-trend``, for the checkpoint's exact resume).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_classification
from torch import nn
from torch.utils.data import TensorDataset

from tapweight import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    DomainData,
    Estimator,
    EstimatorSpec,
    ExportFormat,
    HeadSpec,
    Inputs,
    LoggerSpec,
    MethodSpec,
    ObjectiveSpec,
    Predictor,
    Table,
    TapweightError,
    TaskSpec,
    Weighting,
    directional_fd,
    hookimpl,
    load_backbone,
)


@dataclass
class ToyOptions:
    hidden: int = 16
    noise: float = 0.1
    batchnorm: bool = True


class Backbone(nn.Module):
    def __init__(self, n_in: int, hidden: int, batchnorm: bool = True):
        super().__init__()
        norm = nn.BatchNorm1d(hidden) if batchnorm else nn.Identity()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), norm, nn.ReLU())
        self.out_dim = hidden

    def forward(self, x):
        return self.net(x)


class Denoise(nn.Module):
    """Reconstruct the input from features of a noisy copy (random: replayed by the engine)."""

    def __init__(self, backbone, noise):
        super().__init__()
        self.decoder = nn.Linear(backbone.out_dim, 8)
        self.noise = noise

    def forward(self, backbone, x):
        return ((self.decoder(backbone(x + self.noise * torch.randn_like(x))) - x) ** 2).mean()


class Center(nn.Module):
    """Mean squared feature (a mean over examples, so it splits exactly over data shards)."""

    def forward(self, backbone, x):
        return backbone(x).pow(2).mean()


class Spread(nn.Module):
    """Feature variance towards one (no parameters of its own)."""

    def forward(self, backbone, x):
        return (backbone(x).var(0) - 1).pow(2).mean()


def load(cfg) -> Table:
    x, y = make_classification(n_samples=240, n_features=8, n_informative=4, random_state=0)
    return Table(list(x.astype(np.float32)), y[:, None].astype(np.float64), ("y",), "sklearn")


def collate(items):
    return tuple(torch.stack(t) for t in zip(*items))


def read_rows(path: str) -> Inputs:
    rows = np.loadtxt(path, delimiter=",", ndmin=2).astype(np.float32)
    return Inputs(list(rows), ["" if np.isfinite(r).all() else "not a finite row" for r in rows], path)


def predictor(cfg) -> Predictor:
    return Predictor(read=read_rows, collate=collate,
                     dataset=lambda rows: TensorDataset(torch.tensor(np.stack(rows)), torch.zeros(len(rows), 1)),
                     backbone=lambda: Backbone(8, cfg.options.hidden, cfg.options.batchnorm))


def build_data(cfg, table, split, task) -> DomainData:
    x = torch.tensor(np.stack(table.inputs))
    y = torch.tensor(table.labels, dtype=torch.float32)
    ce = task.loss == "ce"
    part = lambda idx: TensorDataset(x[idx], y[idx, 0].long() if ce else y[idx])  # noqa: E731
    return DomainData(corpus=TensorDataset(x[split.train]), corpus_collate=stack_rows,
                      train=part(split.train), val=part(split.val), test=part(split.test),
                      task_collate=collate, info={"rows": len(x)}, predictor=predictor(cfg))


def write_state(backbone, head, folder: Path, out: Path) -> list[Path]:
    """The export format ``state``: the backbone's (and head's) state dicts, as torch files."""
    torch.save(backbone.state_dict(), out / "backbone.pt")
    if head is not None:
        torch.save(head.state_dict(), out / "head.pt")
    return sorted(out.iterdir())


def stack_rows(items) -> torch.Tensor:
    return torch.stack([i[0] for i in items])  # [B, 8]


def build_corpus(cfg, path: str) -> DomainData:
    """Rows ``[N, 8]`` of a ``.npy`` file, unlabelled."""
    try:
        rows = np.load(path).astype(np.float32)
    except (OSError, ValueError) as err:
        raise TapweightError(f"corpus '{path}' is not a .npy file of rows: {err}") from None
    return DomainData(corpus=TensorDataset(torch.from_numpy(rows)), corpus_collate=stack_rows,
                      info={"corpus_rows": len(rows)})


def build_backbone(cfg, data) -> Backbone:
    backbone = Backbone(8, cfg.options.hidden, cfg.options.batchnorm)
    if cfg.init:
        load_backbone(backbone, cfg.init)
    return backbone


TINY = {"steps": 6, "pretrain.batch_size": 32, "finetune.batch_size": 16, "reweight.batch_size": 16,
        "final.epochs": 2, "final.batch_size": 16, "reweight.lr": 50.0}


@hookimpl
def register_domains(register):
    register(Domain("toy", "synthetic test domain", ToyOptions, backbone="toy.mlp",
                    objectives=("toy.denoise", "toy.spread"), build_data=build_data,
                    presets={"cpu": TINY, "paper": TINY}, load_predictor=lambda cfg, folder: predictor(cfg),
                    exports=(ExportFormat("state", write_state, "torch state dicts"),),
                    build_corpus=build_corpus, pretrain_presets={"cpu": {"pretrain.batch_size": 16}}))


@hookimpl
def register_backbones(register):
    register(BackboneSpec("toy.mlp", build_backbone, "linear + batch-norm + ReLU"))


@hookimpl
def register_objectives(register):
    register(ObjectiveSpec("toy.denoise", lambda b, corpus, cfg: Denoise(b, cfg.options.noise)))
    register(ObjectiveSpec("toy.spread", lambda b, corpus, cfg: Spread()))
    register(ObjectiveSpec("toy.center", lambda b, corpus, cfg: Center()))


@hookimpl
def register_heads(register):
    register(HeadSpec("toy.double", lambda d, n, cfg: nn.Sequential(nn.Linear(d, d), nn.Linear(d, n))))


@hookimpl
def register_datasets(register):
    register(DatasetSpec("toy.blobs", load, "make_classification, 240 rows"))


@hookimpl
def register_tasks(register):
    register(TaskSpec("toy", "blobs", "toy.blobs", "random", "bce", "roc_auc"))
    register(TaskSpec("toy", "blobs-ce", "toy.blobs", "random", "ce", "accuracy",
                      extra_metrics=("mcc",), n_classes=2, classes=("left", "right")))
    register(TaskSpec("toy", "blobs-reg", "toy.blobs", "random", "mse", "rmse",
                      defaults={"head": "toy.double"}))


class Recorder:
    """A tracker that keeps what it is sent in `REPORTS`, and what ``weights.csv`` held
    at each step it was sent (the runner appends the row first). With ``crash_at`` set, it
    raises ``KeyboardInterrupt`` at that step: a run dying between its checkpoints."""

    crash_at: int | None = None

    def __init__(self, cfg, folder, step):
        self.folder = folder
        self.report = {"seed": cfg.seed, "start": step, "values": [], "csv_rows": [], "closed": False}
        REPORTS.append(self.report)

    def log(self, values, step):
        self.report["values"].append((step, dict(values)))
        weights = self.folder / "weights.csv"
        rows = len(weights.read_text().splitlines()) - 1 if weights.exists() else 0
        self.report["csv_rows"].append((step, rows))
        if step == self.crash_at:
            raise KeyboardInterrupt

    def close(self):
        self.report["closed"] = True


REPORTS: list[dict] = []


@hookimpl
def register_loggers(register):
    register(LoggerSpec("recorder", Recorder, "keeps what it is sent, for tests"))


class Trend(Weighting):
    """λ from a running mean m of the hypergradient and of the losses' falls: α ← α − rate·m.
    Reads the hypergradient (so levels II and III run) and keeps m as its own state."""

    learns = True
    hypergradient = True

    @dataclass
    class Options:
        rate: float = 20.0
        decay: float = 0.8

    def __init__(self, cfg, argument=""):
        super().__init__(cfg, argument)
        self.mean, self.last = None, None

    def update(self, signal):
        o = self.options
        fall = torch.zeros_like(signal.losses) if self.last is None else signal.losses - self.last
        now = signal.hypergrad + 1e-3 * fall
        self.mean = now if self.mean is None else o.decay * self.mean + (1 - o.decay) * now
        self.last = signal.losses
        return signal.alpha - o.rate * self.mean

    def state_dict(self):
        return {"mean": self.mean, "last": self.last}

    def load_state_dict(self, state):
        self.mean, self.last = state["mean"], state["last"]


class BackwardDifference(Estimator):
    """A hypergradient estimator as a plugin writes one: θ − εd against level I's own L(θ)
    (one forward, O(ε), rounding like level I's); never ``auto``'s choice (``default`` unset)."""

    cost, precision = 1.0, "level_one"

    def directional(self, step, direction):
        one = step.pretrain
        flipped = [None if d is None else -d for d in direction]
        return -directional_fd(lambda ps: one.evaluate(ps, self.precision), one.theta, flipped,
                               self.settings.fd_radius, one.local_losses)


@hookimpl
def register_estimators(register):
    register(EstimatorSpec("toy-backward", BackwardDifference, "θ − εd against level I's losses"))


@hookimpl
def register_methods(register):
    register(MethodSpec("toy-trend", Trend, "running mean of the hypergradient, with state"))


@hookimpl
def register_commands(cli):
    @cli.command("toy-hello")
    def hello():
        """Say hello from the toy plugin."""
        print("hello from toy")
