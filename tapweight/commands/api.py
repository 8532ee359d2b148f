"""The Python API for notebooks and scripts: ``tapweight.run(domain, task, **config)``.

``run`` is ``tapweight run`` (the same config layers, run folder and numbers) returning a
`Result`: the metrics, the λ and loss histories as data frames, the run folder's
paths, and ``predict`` / ``export`` on its final models. ``Result.load(folder)`` reads a
finished run folder, whoever made it. ``docs/python-api.md`` walks through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from tapweight.errors import TapweightError

if TYPE_CHECKING:
    import pandas as pd


def run(domain: str, task: str, *, preset: str = "auto", out: str | Path | None = None,
        config_file: str | None = None, sets: list[str] = (), quiet: bool = False,
        resume: bool = False, **config) -> Result:
    """Run ``domain``/``task`` like ``tapweight run`` and return its `Result`.

    ``config`` holds config keys as keyword arguments (``method="uniform"``, ``steps=50``,
    ``seeds=[0, 1]``, ``data="bbbp.csv"``, ``init=...``), a level's keys as a dict
    (``final={"epochs": 5}``), the domain's options under its name (``mol={"image_size": 64}``)
    or any dotted key by unpacking (``**{"final.epochs": 5}``); ``model="tiny"`` is ``--model``.
    ``sets`` are ``--set key=value`` strings, ``config_file`` is ``--config``; precedence is
    the command line's. ``out`` is the run folder (default ``runs/<domain>-<task>-<method>-<time>``);
    ``resume=True`` continues it.

    As on the command line, the warnings and INFO lines go to stderr unless the program has
    configured logging, and ``quiet`` is implied when stderr is not a terminal (a notebook, a
    pipe): a log line every ``log_every`` steps instead of progress bars.
    """
    from tapweight.commands.console import console_logging, is_quiet

    with console_logging():
        summary = start(domain, task, preset, config_file, config, list(sets), out, is_quiet(quiet), resume)
    return Result.load(summary["folder"])


def start(domain: str, task: str, preset: str, config_file: str | None, options: dict, sets: list[str],
          out: str | Path | None, quiet: bool, resume: bool = False) -> dict:
    """What ``tapweight run`` and `run` share: load the plugins, resolve the config
    layers (``options["model"]`` is ``--model``), run every seed; returns the summary.

    An unknown domain or task is refused before the runner (and torch) is imported."""
    from tapweight.commands.console import model_options
    from tapweight.plugin.manager import build_registry

    registry = build_registry()
    registry.task(domain, task)
    from tapweight.job import runner

    options = dict(options)
    if "model" in options:
        options.update(model_options(domain, options.pop("model"), registry))
    job = runner.resolve(domain, task, preset, config_file, options, sets, registry=registry)
    return runner.run(job, Path(out) if out is not None else None, quiet, resume=resume)


def _frames(folder: Path, name: str) -> dict[int, pd.DataFrame]:
    """``seed<k>/<name>`` of every seed that has one, by seed."""
    import pandas as pd

    found = {int(f.parent.name.removeprefix("seed")): f for f in folder.glob(f"seed*/{name}")
             if f.parent.name.removeprefix("seed").isdigit()}
    return {seed: pd.read_csv(found[seed]) for seed in sorted(found)}


@dataclass(frozen=True)
class Result:
    """A finished run: ``metrics`` is its ``metrics.json`` (per seed, and mean ± std over
    seeds), ``config`` its resolved ``config.yaml`` as a dict, ``weights`` and ``losses`` the
    per-seed λ and loss histories (one row per global step; empty for method ``none``)."""

    folder: Path
    metrics: dict
    config: dict
    weights: dict[int, pd.DataFrame]
    losses: dict[int, pd.DataFrame]

    def __repr__(self) -> str:
        """One line, as a notebook shows a cell's last value: what ran and its test metric."""
        m = self.metrics
        name = m.get("name") or m["task"]
        spread = f" ± {m['test_std']:.4g}" if len(self.seeds) > 1 else ""
        return (f"Result({m['domain']}/{name}, method {m['method']}, test {self.metric} "
                f"{self.test:.4g}{spread} over {len(self.seeds)} seed(s), folder '{self.folder}')")

    @classmethod
    def load(cls, folder: str | Path) -> Result:
        """The results of a finished run folder."""
        folder = Path(folder)
        summary = folder / "metrics.json"
        if not summary.is_file():
            raise TapweightError(f"'{folder}' has no metrics.json: it is not a finished run "
                                 "(finish it with `tapweight resume`)")
        config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
        return cls(folder, json.loads(summary.read_text()), config,
                   _frames(folder, "weights.csv"), _frames(folder, "losses.csv"))

    @property
    def metric(self) -> str:
        """The task's model-selection metric (``roc_auc``, ``accuracy``, ``rmse``...)."""
        return self.metrics["metric"]

    @property
    def test(self) -> float:
        """The test metric, mean over seeds (``metrics["test_std"]`` is its spread)."""
        return self.metrics["test_mean"]

    @property
    def val(self) -> float:
        """The validation metric of the selected epoch, mean over seeds."""
        return self.metrics["val_mean"]

    @property
    def seeds(self) -> dict[int, dict]:
        """Each seed's results: ``val``, ``test``, ``best_epoch``, ``test_<extra metric>``."""
        return {int(s): r for s, r in self.metrics["seeds"].items()}

    @property
    def paths(self) -> dict[str, Path]:
        """The run folder's files: config, metrics, log, λ plot, and each seed's folder."""
        files = {"config": "config.yaml", "metrics": "metrics.json", "log": "log.txt", "weights_plot": "weights.png"}
        paths = {name: self.folder / file for name, file in files.items()}
        paths.update({f"seed{s}": self.folder / f"seed{s}" for s in self.seeds})
        return paths

    def predict(self, data: str | Path, seed: int | None = None, device: str = "auto",
                columns: dict[str, str] | None = None) -> pd.DataFrame:
        """``tapweight predict``: one row per input row of ``data`` (see `tapweight.commands.predict`);
        ``columns`` as its ``--smiles-column`` / ``--text-column``: ``{"text_column": "review"}``."""
        from tapweight.commands.predict import predict

        return predict(self.folder, data, seed, device, columns)

    def export(self, format: str, out: str | Path | None = None, seed: int | None = None,
               finetuned: bool = False) -> list[Path]:
        """``tapweight export``: the encoder in ``format``; the files written (`tapweight.commands.export`)."""
        from tapweight.commands.export import export

        return export(self.folder, format, out, seed, finetuned)
