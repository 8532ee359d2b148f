"""Experiment trackers: TensorBoard and MLflow built in, more through ``register_loggers``.

``--set report_to=[tensorboard]`` (or ``[mlflow]``, or both) sends each seed's run to the
tracker, in the spirit of Hugging Face Trainer's ``report_to``; a plugin adds another
(W&B, Neptune...) by registering a `LoggerSpec`. The runner drives
them through `RunLoggers` on rank 0:

- every global step: ``lambda/<k>``, ``loss/<k>`` (objective k's unweighted loss),
  ``task/finetune_loss``, ``task/val_loss`` and ``task/val_overconfidence`` (levels II and
  III; ``metrics.overconfidence``), ``hypergrad/<k>``;
- the final fine-tune's validation metric per epoch, ``final/val_<metric>``, at step
  S + epoch (S = the run's global steps, so the axis keeps going after continued pretraining);
- the seed's results, ``result/val_<metric>``, ``result/test_<metric>``..., at the last step.

Where they write: TensorBoard in ``seed<k>/tensorboard/`` (``tensorboard --logdir runs``
finds every run and seed); MLflow to ``$MLFLOW_TRACKING_URI`` if set, else a SQLite store
``mlflow.db`` in the run folder (offline; ``mlflow ui --backend-store-uri sqlite:///...``),
experiment ``<domain>-<task>``, one run per seed, continued by ``tapweight resume``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from tapweight.errors import TapweightError
from tapweight.plugin.specs import LoggerSpec

log = logging.getLogger(__name__)


def step_values(record: dict[str, float]) -> dict[str, float]:
    """A global step's record (``lambda_<k>``, ``loss_<k>``...) under the trackers' names."""
    values = {}
    for key, value in record.items():
        if key == "step":
            continue
        for prefix in ("lambda", "loss", "hypergrad"):
            if key.startswith(f"{prefix}_"):
                values[f"{prefix}/{key[len(prefix) + 1:]}"] = value
                break
        else:
            values[f"task/{key}"] = value
    return values


def _missing(package: str, extra: str) -> TapweightError:
    return TapweightError(f"report_to {extra} needs the {package} package: "
                          f"pip install 'tapweight[{extra}]' (or drop it from report_to)")


class TensorBoard:
    """``torch.utils.tensorboard`` in ``<seed folder>/tensorboard``; on resume, events a
    killed run wrote after its checkpoint are purged (``purge_step``)."""

    def __init__(self, cfg, folder: Path, step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            raise _missing("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=step + 1, flush_secs=10)
        if step == 0:
            from tapweight.config import to_yaml

            self.writer.add_text("config", f"```\n{to_yaml(cfg)}```")

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class MLflow:
    """One MLflow run per seed; its id is kept in ``<seed folder>/mlflow.json`` so that
    ``tapweight resume`` continues the same run. Metrics are sent in batches of
    ``log_every`` steps."""

    def __init__(self, cfg, folder: Path, step: int):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        self._metric = Metric
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder.parent.resolve() / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        self.every, self.pending = cfg.log_every, []
        saved = folder / "mlflow.json"
        if saved.is_file():
            self.run_id = json.loads(saved.read_text())["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = f"{cfg.domain}-{cfg.task}"
        experiment = self.client.get_experiment_by_name(name)
        artifacts = str(folder.parent.resolve() / "mlartifacts")
        experiment_id = (experiment.experiment_id if experiment is not None else
                         self.client.create_experiment(name, artifact_location=artifacts))
        run = self.client.create_run(experiment_id, run_name=f"{folder.parent.name}-{folder.name}",
                                     tags={"tapweight.run_folder": str(folder.parent.resolve())})
        self.run_id = run.info.run_id
        from tapweight.files import atomic_write

        text = json.dumps({"run_id": self.run_id, "tracking_uri": uri}) + "\n"
        atomic_write(saved, lambda tmp: tmp.write_text(text))
        params = [Param(k, str(v)[:6000]) for k, v in _flat_config(cfg).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [self._metric(name, float(v), now, step) for name, v in values.items()]
        if step % self.every == 0:
            self._flush()

    def _flush(self) -> None:
        for start in range(0, len(self.pending), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000])
        self.pending = []

    def close(self) -> None:
        self._flush()
        self.client.set_terminated(self.run_id)


def _flat_config(cfg) -> dict[str, object]:
    """The resolved config as dotted keys (``finetune.gamma``) for a tracker's parameters."""
    from omegaconf import OmegaConf

    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(OmegaConf.structured(cfg)), "")
    return flat


class RunLoggers:
    """The trackers of ``cfg.report_to`` for one seed (rank 0 only; none elsewhere).

    They are built by `open` once the seed's first step is known (after a resume), or
    by the first `log`; ``with`` closes them however the seed ends."""

    def __init__(self, specs: list[LoggerSpec], cfg, folder: Path):
        self.specs, self.cfg, self.folder = specs, cfg, folder
        self.loggers: list | None = None

    def open(self, step: int) -> None:
        if self.loggers is None:
            self.loggers = []
            for spec in self.specs:
                self.loggers.append(spec.build(self.cfg, self.folder, step))
                log.info("seed %d reports to %s", self.cfg.seed, spec.name)

    def log(self, values: dict[str, float], step: int) -> None:
        if not self.specs:
            return
        self.open(0)
        for logger in self.loggers:
            logger.log(values, step)

    def __enter__(self) -> RunLoggers:
        return self

    def __exit__(self, *exc) -> None:
        for logger in self.loggers or []:
            logger.close()
