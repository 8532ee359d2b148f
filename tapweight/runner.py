"""From ``tapweight run DOMAIN TASK`` to a run folder.

``resolve`` turns the command line into a typed config and the registered pieces;
``run`` loads the data once and, for each seed, builds θ and w, runs the engine (unless
the method is ``none``), re-finetunes the final backbone and scores the test split.

Run folder layout::

    config.yaml  metrics.json  weights.png  log.txt  [mlflow.db]
    seed<k>/  checkpoint.pt  weights.csv  losses.csv  hypergrad.csv  weights.png  backbone.safetensors
              metrics.json  predictions.csv  target_scaler.json (regression tasks)  [tensorboard/]
              model.safetensors  model.json  predictor/  (the final model: tapweight.saved)

``weights.csv`` and ``losses.csv`` grow a row per global step as the run goes (report.py);
the trackers of ``report_to`` (loggers.py) receive the same values.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from tapweight import distributed
from tapweight.checkpoint import atomic_write, load_state, read_weights, save_state, save_weights
from tapweight.config import (
    RunConfig,
    build_config,
    layer_from_dict,
    layer_from_file,
    layer_from_sets,
    to_yaml,
)
from tapweight.data import BatchStream, check_batch_size, random_split
from tapweight.engine import Engine, NonFiniteLoss
from tapweight.errors import TapweightError
from tapweight.finetune import refinetune
from tapweight.interrupts import Interrupted
from tapweight.labels import check_split, check_table
from tapweight.loggers import RunLoggers, step_values
from tapweight.models import PretrainModel, TaskModel
from tapweight.plugins import build_registry
from tapweight.progress import Progress, StepStatus
from tapweight.registry import Registry
from tapweight.report import (
    Trajectory,
    mean_pm_std,
    overconfidence_line,
    plot_weights,
    signal_line,
    summarize,
    write_diagnostics,
    write_json,
    write_predictions,
)
from tapweight.runlog import RunLog
from tapweight.saved import save_final
from tapweight.session import Session
from tapweight.session import current as current_session
from tapweight.specs import Domain, DomainData, Split, Table, TaskSpec
from tapweight.targets import SCALER_FILE, TargetScaler, standardize_targets

log = logging.getLogger("tapweight")


@dataclass
class Job:
    """A resolved run: the config and the registered pieces it names (``task`` is None for
    ``tapweight pretrain``, which trains level I alone on a corpus)."""

    cfg: RunConfig
    registry: Registry
    domain: Domain
    task: TaskSpec | None
    preset: str


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
    layers = [
        (f"task {spec.key} defaults",
         layer_from_dict({"domain": domain, "task": task, **spec.defaults}, domain)),
        (f"preset {preset}", layer_from_dict(dict(dom.presets.get(preset, {})), domain)),
        (f"task {spec.key} overrides", layer_from_dict(dict(spec.overrides), domain)),
        *user_layers(domain, config_file, options, sets),
    ]
    job = Job(build_config(dom.options, layers), registry, dom, spec, preset)
    objective_names(job)  # fail on a bad objective or tracker before any work is done
    logger_specs(job)
    return job


def objective_names(job: Job) -> list[str]:
    """The registered names of the objectives the method trains on."""
    cfg, reg, dom = job.cfg, job.registry, job.domain.name
    if cfg.method.startswith("single:"):
        wanted = [cfg.method.split(":", 1)[1]]
    else:
        wanted = cfg.objectives or list(job.domain.objectives)
    names = [reg.get("objectives", n, dom).name for n in wanted]
    if len(set(names)) != len(names):
        raise TapweightError(f"objectives are listed twice: {wanted}")
    if cfg.method == "fixed" and len(cfg.weights) != len(names):
        raise TapweightError(f"method 'fixed' needs one weight per objective ({len(names)}: "
                             f"{', '.join(names)}), got {len(cfg.weights)}")
    return names


def logger_specs(job: Job) -> list:
    """The registered trackers ``report_to`` names (``tapweight list loggers``)."""
    return [job.registry.get("loggers", name) for name in job.cfg.report_to]


def pick_device(name: str) -> torch.device:
    """The device named by ``--device`` (``auto``: CUDA when there is a GPU), checked now:
    a device this machine lacks is a one-line error, not a failure in the first step."""
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
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise TapweightError(f"--device {name}: MPS is not available here; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise TapweightError(f"--device {name}: tapweight runs on auto, cpu, cuda, cuda:N or mps")
    return device


def default_out(cfg: RunConfig) -> Path:
    method = cfg.method.replace(":", "-")
    return Path("runs") / f"{cfg.domain}-{cfg.task}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    return in_run_folder(job, out or default_out(job.cfg), resume, lambda out, device, run_log, session: {
        **_run_seeds(job, out, device, quiet, resume, run_log, session), "folder": str(out)})


def in_run_folder(job: Job, out: Path, resume: bool, body: Callable) -> dict:
    """``body(out, device, run_log, session)`` in the run folder ``out``, its log and its
    session (folder lock, interrupts, checkpoints), after the checks that need no data
    (device, batch sizes, ``--init``); an interrupt ends it with the session's one line."""
    cfg = job.cfg
    device = distributed.setup(pick_device(cfg.device))
    check_batch_sizes(cfg)
    if cfg.init:
        read_weights(cfg.init)
    out = Path(distributed.broadcast(str(out)))  # one folder for all ranks
    with RunLog() as run_log, Session(out, resume, run_log) as session:
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
    log.info("run %s/%s, method %s, preset %s -> %s", cfg.domain, cfg.task, cfg.method,
             job.preset, out)
    log.info("data: %d rows, %d label column(s) from %s", len(table.inputs),
             table.labels.shape[1], table.source or job.task.dataset)
    seeds = list(cfg.seeds) or [cfg.seed]
    results = {}
    for seed in seeds:
        session.begin_seed(seed, len(seeds))
        results[seed] = run_seed(job, replace(cfg, seed=seed), table, out / f"seed{seed}",
                                 device, quiet)
        session.progressed()
    summary = {"domain": cfg.domain, "task": cfg.task, "method": cfg.method,
               "metric": job.task.metric, "seeds": results, **summarize(results)}
    folders = [out / f"seed{s}" for s in seeds]
    if main:
        write_json(summary, out / "metrics.json")
        if all((f / "weights.csv").exists() for f in folders):
            plot_weights(folders, out / "weights.png", f"{cfg.domain}/{cfg.task}: λ over steps")
    log.info("test %s over %d seed(s): %s", job.task.metric, len(seeds), mean_pm_std(summary))
    return summary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_table(job: Job, cfg: RunConfig, table: Table) -> Split:
    """The rows of ``table`` for train, val and test: ``cfg.split`` or the task's split."""
    splits = {"random": random_split, **job.domain.splits}
    split_name = cfg.split or job.task.split
    if split_name not in splits:
        raise TapweightError(f"unknown split '{split_name}' (splits: {', '.join(sorted(splits))})")
    return splits[split_name](table, cfg.seed)


def run_seed(job: Job, cfg: RunConfig, table: Table, folder: Path, device: torch.device,
             quiet: bool) -> dict:
    """One seed: split, build, continued pretraining (levels I–III), final fine-tune."""
    done = folder / "metrics.json"
    if done.exists():
        log.info("seed %d already finished; skipping", cfg.seed)
        return OmegaConf.to_container(OmegaConf.load(done))
    if distributed.is_main():
        folder.mkdir(parents=True, exist_ok=True)
    task = build_task(job, cfg, table)
    if task.scaler is not None and distributed.is_main():
        task.scaler.save(folder / SCALER_FILE)
    backbone = task.backbone
    with RunLoggers(logger_specs(job) if distributed.is_main() else [], cfg, folder) as loggers:
        if cfg.method != "none":
            try:
                backbone = continued_pretraining(job, cfg, task.data, backbone, task.make_head(), device,
                                                 folder, quiet, loggers)
            except NonFiniteLoss as err:
                saved = folder / "checkpoint.pt"
                kept = (f"the checkpoint of step {load_state(saved)['step']} is kept in {saved}"
                        if saved.exists() else
                        "no checkpoint exists yet (checkpoint_every=N keeps one every N steps)")
                raise NonFiniteLoss(f"{err}; {kept}", err.step) from None
        result = None
        current_session().started()
        if distributed.is_main():  # the final fine-tune is small: rank 0 alone runs it
            steps = cfg.steps if cfg.method != "none" else 0  # the trackers' axis goes on from there
            metric = job.task.metric

            def on_epoch(epoch: int, value: float) -> None:
                progress.advance(f"val {metric} {value:.4f}")
                loggers.log({f"final/val_{metric}": value}, steps + epoch)

            progress = Progress(cfg.final.epochs, "final fine-tune", quiet)
            with progress:
                result, preds, model = refinetune(
                    backbone, task.make_head, task.data, job.task, cfg.final, device, cfg.seed, cfg.num_workers,
                    on_epoch=on_epoch, scaler=task.scaler)
            log.info("seed %d: val %s %.4f, test %.4f (epoch %d)", cfg.seed, metric,
                     result["val"], result["test"], result["best_epoch"])
            loggers.log({f"result/{k}": v for k, v in result.items() if isinstance(v, (int, float))},
                        steps + cfg.final.epochs)
            write_predictions(table, task.split.test, preds, folder / "predictions.csv")
            save_final(folder, model, job, table.label_names, task.data.predictor)
            write_json(result, done)
    return distributed.broadcast(result)


@dataclass
class TaskData:
    """A seed's split, the domain's data built on it (regression targets standardised), the
    backbone, a maker of fresh task heads, and the target scaler (regression only)."""

    split: Split
    data: DomainData
    backbone: torch.nn.Module
    make_head: Callable[[], torch.nn.Module]
    scaler: TargetScaler | None


def build_task(job: Job, cfg: RunConfig, table: Table) -> TaskData:
    """Split ``table`` for ``cfg.seed`` and build what a seed trains on (:class:`TaskData`)."""
    seed_everything(cfg.seed)
    split = split_table(job, cfg, table)
    check_split(table, split, job.task, cfg.seed)
    labelled, scaler = table, None
    if job.task.loss == "mse":  # regression: train on standardised targets (targets.py)
        labelled, scaler = standardize_targets(table, split)
        log.info("targets standardised with the train split's mean %s and std %s (%s)",
                 np.round(scaler.mean, 4).tolist(), np.round(scaler.std, 4).tolist(), SCALER_FILE)
    data = job.domain.build_data(cfg, labelled, split, job.task)
    for key, value in data.info.items():
        log.info("data %s: %s", key, value)
    reg, dom = job.registry, job.domain.name
    backbone = reg.get("backbones", cfg.backbone or job.domain.backbone, dom).build(cfg, data)
    head_spec = reg.get("heads", cfg.head or job.domain.head, dom)
    n_outputs = job.task.n_classes if job.task.loss == "ce" else table.labels.shape[1]
    return TaskData(split, data, backbone, lambda: head_spec.build(backbone.out_dim, n_outputs, cfg), scaler)


def build_engine(job: Job, cfg: RunConfig, data, backbone, head, device) -> Engine:
    """θ (``backbone`` and the method's objectives), w (a copy of ``backbone`` and ``head``),
    the three batch streams and the engine over them."""
    names = objective_names(job)
    objectives = [job.registry.get("objectives", n).build(backbone, data.corpus, cfg) for n in names]
    theta = PretrainModel(backbone, objectives, names)
    w = TaskModel(copy.deepcopy(backbone), head)
    learn = cfg.method == "tapweight"
    p, f, r = cfg.pretrain, cfg.finetune, cfg.reweight
    shard, pin = (distributed.rank(), distributed.world_size()), device.type == "cuda"
    corpus = BatchStream(data.corpus, p.batch_size, data.corpus_collate, cfg.seed, cfg.num_workers, shard, pin)
    train = BatchStream(data.train, f.batch_size, data.task_collate, cfg.seed + 1, shard=shard,
                        pin_memory=pin) if learn else None
    val = BatchStream(data.val, r.batch_size, data.task_collate, cfg.seed + 2, shard=shard,
                      pin_memory=pin) if learn else None
    weights = cfg.weights or None
    if cfg.method.startswith("single:"):
        weights = [1.0]
    return Engine(theta, w, corpus, train, val, cfg, job.task.loss if learn else "", device, learn, weights)


def continued_pretraining(job: Job, cfg: RunConfig, data, backbone, head, device, folder: Path,
                          quiet: bool, loggers: RunLoggers | None = None):
    """Levels I–III for ``cfg.steps`` global steps; returns the final θ backbone.

    Each step's record goes to ``weights.csv``/``losses.csv`` (rank 0), to the trackers, and
    to the bar's status line (or, ``quiet``, a log line every ``log_every`` steps)."""
    engine = build_engine(job, cfg, data, backbone, head, device)
    theta = engine.theta
    checkpoint = folder / "checkpoint.pt"
    session = current_session()
    resume_engine(engine, checkpoint, cfg.seed)
    session.saved(engine.step_count)
    main = distributed.is_main()
    loggers = loggers or RunLoggers([], cfg, folder)
    trajectory = Trajectory(folder)
    if main:
        trajectory.restart(engine.history)  # what the checkpoint holds, no row more
        loggers.open(engine.step_count)
    status = StepStatus(cfg.log_every)
    progress = Progress(cfg.steps, f"{cfg.method} seed {cfg.seed}", quiet or not main, start=engine.step_count)
    session.started()
    with session.deferred():  # a first Ctrl-C between or inside steps lets the step finish, then stops
        with progress:
            while engine.step_count < cfg.steps:
                record = engine.step()
                session.progressed()
                status.update(record)
                if main:
                    trajectory.append(record)
                    loggers.log(step_values(record), engine.step_count)
                progress.advance(status.line())
                if quiet and main and (engine.step_count % cfg.log_every == 0 or engine.step_count == cfg.steps):
                    log.info("step %d/%d %s", engine.step_count, cfg.steps, status.line())
                stop = session.stop_signal()
                if main and (stop or session.checkpoint_due(cfg, engine.step_count)):
                    save_state(engine.state_dict(), checkpoint)
                    session.saved(engine.step_count)
                if stop:
                    raise Interrupted(stop)
        if not main:
            return theta.backbone
        save_state(engine.state_dict(), checkpoint)
        session.saved(engine.step_count)
        if write_diagnostics(folder) is not None:
            log.info("seed %d: %s -> hypergrad.csv", cfg.seed, signal_line(folder))
        if warning := overconfidence_line(folder):
            log.warning("seed %d: %s", cfg.seed, warning)
        plot_weights([folder], folder / "weights.png",
                     f"{cfg.domain}/{cfg.task or 'pretrain'} seed {cfg.seed}: λ over steps")
        save_weights(theta.backbone, folder / "backbone.safetensors")
    if stop := session.stop_signal(agree=False):
        raise Interrupted(stop)
    return theta.backbone


def resume_engine(engine: Engine, checkpoint: Path, seed: int) -> None:
    """Continue from ``checkpoint`` when there is one; every rank must see the same one."""
    if checkpoint.exists():
        state = load_state(checkpoint)
        try:
            engine.load_state_dict(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            reason = " ".join(str(err).split())[:200]
            raise TapweightError(f"checkpoint {checkpoint} does not fit this run (was config.yaml "
                                 f"changed? {type(err).__name__}: {reason}); delete it to restart "
                                 "this seed from step 0") from None
        log.info("resumed seed %d at step %d", seed, engine.step_count)
    first = distributed.broadcast(engine.step_count)
    if first != engine.step_count:
        raise TapweightError(f"rank {distributed.rank()} found {checkpoint} at step {engine.step_count}, "
                             f"rank 0 at step {first}: --out must be on a file system all nodes share")
