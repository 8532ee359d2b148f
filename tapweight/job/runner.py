"""From ``tapweight run DOMAIN TASK`` to a run folder.

``resolve`` turns the command line into a typed config and the registered pieces (a
`Job`); ``run`` checks what needs no data, opens the run folder, loads the data once
and runs each seed (`tapweight.job.seed`: levels I–III, the final fine-tune).

Run folder layout:

    config.yaml  metrics.json  weights.png  log.txt  [mlflow.db]
    seed<k>/  [checkpoint.pt]  weights.csv  losses.csv  hypergrad.csv  weights.png  backbone.safetensors
              metrics.json  predictions.csv  target_scaler.json (regression tasks)  [tensorboard/]
              [overconfidence.txt] (when w was consistently overconfident: job/summary.py)
              model.safetensors  model.json  predictor/  (the final model: tapweight.job.saved)

``weights.csv`` and ``losses.csv`` grow a row per global step as the run goes (job/report.py);
the trackers of ``report_to`` (job/trackers.py) receive the same values. ``checkpoint.pt``
(the engine's state, for resume) is deleted when its seed finishes unless ``keep_checkpoint``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from tapweight import distributed
from tapweight.config import RunConfig, build_config, layer_from_dict, layer_from_file, layer_from_sets, to_yaml
from tapweight.errors import TapweightError
from tapweight.files import atomic_write
from tapweight.interrupts import Interrupted
from tapweight.job import resolved, seed
from tapweight.job.checkpoint import read_weights, reading_once
from tapweight.job.determinism import deterministic
from tapweight.job.folder import saved_task
from tapweight.job.job import Job
from tapweight.job.labels import check_table
from tapweight.job.log import RunLog
from tapweight.job.report import plot_weights, summarize, write_json
from tapweight.job.saved import BACKBONE_FILE, MODEL_FILE
from tapweight.job.seed import CHECKPOINT
from tapweight.job.session import Session
from tapweight.job.summary import mean_pm_std
from tapweight.method import estimators
from tapweight.method.batches import check_batch_size
from tapweight.plugin.manager import build_registry
from tapweight.plugin.registry import Registry
from tapweight.plugin.specs import Domain, TaskSpec

log = logging.getLogger("tapweight")


def pick_preset(dom: Domain, preset: str, more: tuple[str, ...] = ()) -> str:
    """``preset``, with ``auto`` made ``paper`` on CUDA and ``cpu`` elsewhere; an unknown
    name (neither the domain's nor in ``more``) is a one-line error."""
    if preset == "auto":
        preset = "paper" if torch.cuda.is_available() else "cpu"
    known = {*dom.presets, *more}
    if preset not in known and preset != "paper":
        raise TapweightError(f"domain '{dom.name}' has no preset '{preset}' "
                             f"(presets: {', '.join(sorted(known)) or 'none'})")
    return preset


def user_layers(domain: str, config_file: str | None, options: dict | None,
                sets: list[str]) -> list[tuple[str, DictConfig]]:
    """The layers a user gives, lowest precedence first: ``config_file``, command-line
    ``options``, ``--set`` strings."""
    layers = []
    if config_file:
        layers.append((config_file, layer_from_file(config_file, domain)))
    if options:
        layers.append(("command-line options", layer_from_dict(options, domain)))
    if sets:
        layers.append(("--set", layer_from_sets(list(sets), domain)))
    return layers


def resolve(domain: str, task: str, preset: str = "auto", config_file: str | None = None,
            options: dict | None = None, sets: list[str] = (),
            registry: Registry | None = None) -> Job:
    """Merge the config layers for ``domain/task``, lowest precedence first: the task's
    defaults, the preset, the task's overrides, ``config_file``, command-line ``options``,
    ``--set`` strings."""
    registry = registry or build_registry()
    dom = registry.require_domain(domain)
    spec = registry.task(domain, task)
    preset = pick_preset(dom, preset)
    user = user_layers(domain, config_file, options, sets)

    def layers(spec: TaskSpec) -> list[tuple[str, DictConfig]]:
        return [(f"task {spec.key} defaults",
                 layer_from_dict({"domain": domain, "task": task, **spec.defaults}, domain)),
                (f"preset {preset}", layer_from_dict(dict(dom.presets.get(preset, {})), domain)),
                (f"task {spec.key} overrides", layer_from_dict(dict(spec.overrides), domain)),
                *user]

    if spec.fit is not None:  # a task for any labelled file: its type comes from the data
        spec = spec.fit(build_config(dom.options, layers(spec), check=False))
    cfg = build_config(dom.options, layers(spec))
    job = Job(cfg, registry, dom, spec, preset, kept_values(cfg, dom.presets.get(preset, {}), domain))
    seed.objective_names(job)  # fail on a bad objective or tracker before any work is done
    seed.logger_specs(job)
    return job


def kept_values(cfg: RunConfig, values: dict, domain: str) -> dict:
    """The entries of ``values`` (a preset's dotted keys) that ``cfg`` holds as they are."""
    def get(key: str):
        node = cfg
        for part in ("options" + key[len(domain):] if key.startswith(f"{domain}.") else key).split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        return node

    return {k: v for k, v in values.items() if get(k) == (list(v) if isinstance(v, tuple) else v)}


def run_job(folder: Path) -> Job:
    """The `Job` of a run folder, from its ``config.yaml`` (predict, export)."""
    domain, task = saved_task(folder)
    if not task:
        raise TapweightError(f"'{folder}' is a `tapweight pretrain` folder: it has an encoder "
                             f"({BACKBONE_FILE}, for tapweight run --init) but no task model")
    return resolve(domain, task, "paper", str(Path(folder) / "config.yaml"))


def pick_device(name: str) -> torch.device:
    """The device named by ``--device`` (``auto``: CUDA when there is a GPU), checked now:
    a device this machine lacks is a one-line error, not a failure in the first step.
    ``cuda:N`` becomes CUDA's current device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise TapweightError(f"bad device '{name}': {err}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TapweightError(f"--device {name}: torch sees no CUDA GPU on this machine; "
                                 "use --device cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise TapweightError(f"--device {name}: this machine has {count} CUDA GPU(s), "
                                 f"cuda:0..cuda:{count - 1}")
        if device.index is not None:  # pinned memory and new tensors go to this GPU, not GPU 0
            torch.cuda.set_device(device)
    elif device.type == "mps":
        raise TapweightError(f"--device {name}: MPS has no float64, which the hypergradient's bookkeeping "
                             "uses; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda"):
        raise TapweightError(f"--device {name}: tapweight runs on auto, cpu, cuda or cuda:N")
    return device


def default_out(cfg: RunConfig, name: str = "") -> Path:
    """``runs/<domain>-<task, or name>-<method>-<time>``."""
    method = cfg.method.replace(":", "-")
    return Path("runs") / f"{cfg.domain}-{name or cfg.task}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_batch_sizes(cfg: RunConfig) -> None:
    """The global batch sizes of levels I–III split over the processes (before any work)."""
    world = distributed.launched_world_size()
    for level in ("pretrain", "finetune", "reweight"):
        check_batch_size(f"{level}.batch_size", getattr(cfg, level).batch_size, world)


def run(job: Job, out: Path | None = None, quiet: bool = False, resume: bool = False) -> dict:
    """Every seed of the job; writes the run folder and returns the summary.

    Everything a user can get wrong (device, batch sizes, ``--init``, ``--out``, the data) is
    checked before the first step; a fresh run that fails before it leaves no folder behind.
    """
    out = out or default_out(job.cfg, job.task.shown_name)
    return in_run_folder(job, out, resume, lambda out, device, run_log, session: {
        **_run_seeds(job, out, device, quiet, resume, run_log, session), "folder": str(out)})


def in_run_folder(job: Job, out: Path, resume: bool, body: Callable) -> dict:
    """``body(out, device, run_log, session)`` in the run folder ``out``, its log and its
    session (folder lock, interrupts, checkpoints), after the checks that need no data
    (device, batch sizes, ``--init``); an interrupt ends it with the session's one line."""
    cfg = job.cfg
    device = distributed.setup(pick_device(cfg.device))
    check_batch_sizes(cfg)
    with reading_once():  # --init is read here, once, for this check and every seed's build
        if cfg.init:
            read_weights(cfg.init)
        out = Path(distributed.broadcast(str(out)))  # one folder for all ranks
        with RunLog() as run_log, Session(out, resume, run_log) as session, deterministic(cfg.deterministic):
            try:
                return body(out, device, run_log, session)
            except Interrupted as err:
                raise session.interrupted(err.signum) from None


def open_run_folder(out: Path, cfg: RunConfig, resume: bool, run_log: RunLog) -> None:
    """Once the data has been read (so that bad data leaves no folder): rank 0 writes
    ``config.yaml`` (a fresh run) and starts ``log.txt`` with the lines held so far."""
    if distributed.is_main():
        if not resume:
            atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(to_yaml(cfg)))
        run_log.open(out / "log.txt")


def _run_seeds(job: Job, out: Path, device: torch.device, quiet: bool, resume: bool,
               run_log: RunLog, session: Session) -> dict:
    cfg = job.cfg
    table = job.registry.get("datasets", job.task.dataset, cfg.domain).load(cfg)
    check_table(table, job.task)
    main = distributed.is_main()
    open_run_folder(out, cfg, resume, run_log)
    log.info("run %s/%s, method %s, preset %s -> %s", cfg.domain, job.task.shown_name, cfg.method,
             job.preset, out)
    log.info("data: %d rows, %d label column(s) from %s", len(table.inputs),
             table.labels.shape[1], table.source or job.task.dataset)
    chosen = estimator(job, device)
    log.info("encoder: %s", resolved.encoder_source(cfg))
    if not resume:  # a resumed run's preset is that of its config.yaml (logged when it started)
        log.info("%s", resolved.preset_line(job.preset, job.preset_values))
    if job.task.title:  # a task fitted to the data: say what it made of it
        log.info("task %s; metric %s (also reported: %s)", job.task.description, job.task.metric,
                 ", ".join(job.task.extra_metrics) or "none")
    seeds = list(cfg.seeds) or [cfg.seed]
    results = {}
    for k in seeds:
        session.begin_seed(k, len(seeds))
        results[k] = seed.run_seed(job, replace(cfg, seed=k), table, out / f"seed{k}",
                                 device, quiet)
        session.progressed()
    summary = {"domain": cfg.domain, "task": cfg.task, "name": job.task.shown_name, "method": cfg.method,
               "metric": job.task.metric, "seeds": results, **summarize(results), **chosen}
    folders = [out / f"seed{s}" for s in seeds]
    if main:
        write_json(summary, out / "metrics.json")
        if all((f / "weights.csv").exists() for f in folders):
            plot_weights(folders, out / "weights.png", f"{cfg.domain}/{job.task.shown_name}: λ over steps")
    log.info("test %s over %d seed(s): %s", job.task.metric, len(seeds), mean_pm_std(summary))
    if main:
        log.info("%s", kept_line(folders, cfg.keep_checkpoint))
    return summary


def estimator(job: Job, device: torch.device) -> dict:
    """``{"estimator": {"name", "reason"}}``: which estimator computes the run's hypergradient
    on ``device`` and why (``auto``'s choice, `tapweight.method.estimators.choose`), also
    logged; ``{}`` for a method that reads no hypergradient."""
    if not seed.weighting(job).hypergradient:
        return {}
    name, reason = estimators.choose(job.cfg, device, job.registry)
    log.info("hypergradient by %s: %s", name, reason)
    return {"estimator": {"name": name, "reason": reason}}


#: what a finished seed folder keeps, and what each file is for
KEPT = {MODEL_FILE: "the final model: predict, export", BACKBONE_FILE: "the continued-pretrained encoder: --init",
        CHECKPOINT: "the engine's full state"}


def kept_line(folders: list[Path], keep_checkpoint: bool) -> str:
    """Which of the large files every seed folder kept, and whether the checkpoints were deleted."""
    kept = [f"{name} ({why})" for name, why in KEPT.items() if all((f / name).is_file() for f in folders)]
    dropped = "" if keep_checkpoint else f"; {CHECKPOINT} deleted once a seed finished (--keep-checkpoint keeps it)"
    return f"kept in each seed folder: {', '.join(kept) or 'no model'}{dropped}"
