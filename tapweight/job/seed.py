"""One seed of a run: split, build θ and w, levels I–III, the final fine-tune, the saved model.

`run_seed` is what `tapweight.job.runner.run` calls for each seed; it builds the
seed's pieces from the job's registry (`build_task`, `build_engine`), runs the
engine with its checkpoints and trajectory (`continued_pretraining`) unless the method
pretrains nothing (``none``), then re-finetunes the final backbone (`tapweight.method.final.refinetune`)
and writes the seed's folder.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from tapweight import distributed
from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.files import atomic_write
from tapweight.interrupts import Interrupted
from tapweight.job import resolved
from tapweight.job.checkpoint import load_state, save_state, save_weights
from tapweight.job.job import Job
from tapweight.job.labels import check_split
from tapweight.job.progress import Progress, StepStatus
from tapweight.job.report import Trajectory, plot_weights, write_diagnostics, write_json, write_predictions
from tapweight.job.saved import save_final
from tapweight.job.session import current as current_session
from tapweight.job.summary import DETAILS, overconfidence_details, overconfidence_line, signal_line
from tapweight.job.trackers import RunLoggers, step_values
from tapweight.method import weightings
from tapweight.method.batches import BatchStream, random_split
from tapweight.method.engine import Engine
from tapweight.method.final import class_probabilities, per_label, refinetune
from tapweight.method.models import PretrainModel, TaskModel
from tapweight.method.reads import NonFiniteLoss
from tapweight.method.targets import SCALER_FILE, TargetScaler, standardize_targets
from tapweight.method.weightings import Weighting
from tapweight.plugin.specs import DomainData, Split, Table

log = logging.getLogger("tapweight")
CHECKPOINT = "checkpoint.pt"  # the engine's full state, for an exact resume


def weighting(job: Job) -> Weighting:
    """A fresh instance of the job's weighting method (``cfg.method``, ``tapweight list methods``)."""
    return weightings.build(job.registry, job.cfg)


def objective_names(job: Job, rule: Weighting | None = None) -> list[str]:
    """The registered names of the objectives the method trains on (checked against the
    method's starting weights)."""
    cfg, reg, dom = job.cfg, job.registry, job.domain.name
    rule = rule or weighting(job)
    wanted = rule.objectives(cfg.objectives or resolved.default_objectives(cfg, reg, job.domain))
    names = [reg.get("objectives", n, dom).name for n in wanted]
    if len(set(names)) != len(names):
        raise TapweightError(f"objectives are listed twice: {wanted}")
    rule.initial(names)
    return names


def logger_specs(job: Job) -> list:
    """The registered trackers ``report_to`` names (``tapweight list loggers``)."""
    return [job.registry.get("loggers", name) for name in job.cfg.report_to]


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
    split = splits[split_name](table, cfg.seed)
    log.info("seed %d: split %s: train %d, val %d (model selection), test %d rows", cfg.seed, split_name,
             len(split.train), len(split.val), len(split.test))
    return split


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
    backbone, pretrains = task.backbone, weighting(job).pretrains
    with RunLoggers(logger_specs(job) if distributed.is_main() else [], cfg, folder) as loggers:
        if pretrains:
            try:
                backbone = continued_pretraining(job, cfg, task.data, backbone, task.make_head(), device,
                                                 folder, quiet, loggers)
            except NonFiniteLoss as err:
                saved = folder / CHECKPOINT
                kept = (f"the checkpoint of step {load_state(saved)['step']} is kept in {saved}"
                        if saved.exists() else
                        "no checkpoint exists yet (checkpoint_every=N keeps one every N steps)")
                raise NonFiniteLoss(f"{err}; {kept}", err.step) from None
        result = None
        current_session().started()
        if distributed.is_main():  # the final fine-tune is small: rank 0 alone runs it
            steps = cfg.steps if pretrains else 0  # the trackers' axis goes on from there
            metric = job.task.metric

            def on_epoch(epoch: int, value: float) -> None:
                progress.advance(f"val {metric} {value:.4f}")
                if quiet:  # the bar shows it on a terminal
                    log.info("final fine-tune epoch %d/%d: val %s %.4f", epoch, cfg.final.epochs, metric, value)
                loggers.log({f"final/val_{metric}": value}, steps + epoch)

            progress = Progress(cfg.final.epochs, "final fine-tune", quiet)
            with progress:
                result, preds, model = refinetune(
                    backbone, task.make_head, task.data, job.task, cfg.final, device, cfg.seed, cfg.num_workers,
                    on_epoch=on_epoch, scaler=task.scaler)
            log.info("seed %d: val %s %.4f, test %.4f (epoch %d)", cfg.seed, metric,
                     result["val"], result["test"], result["best_epoch"])
            if table.labels.shape[1] > 1:
                result.update(per_label(job.task, preds, table.labels[task.split.test], table.label_names))
                log.info("seed %d: test per label: %s", cfg.seed, ", ".join(
                    f"{k.removeprefix('test_')} {v:.4f}" for k, v in result.items() if "/" in k))
            loggers.log({f"result/{k}": v for k, v in result.items() if isinstance(v, (int, float))},
                        steps + cfg.final.epochs)
            probabilities = (class_probabilities(model, task.data.test, task.data.task_collate, cfg.final.batch_size,
                                                 device, cfg.num_workers) if job.task.loss == "ce" else None)
            write_predictions(table, task.split.test, preds, folder / "predictions.csv", job.task.classes,
                              probabilities)
            save_final(folder, model, job, table.label_names, task.data.predictor)
            write_json(result, done)
            if not cfg.keep_checkpoint:  # a finished seed is skipped by resume: nothing reads it again
                (folder / CHECKPOINT).unlink(missing_ok=True)
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
    """Split ``table`` for ``cfg.seed`` and build what a seed trains on (`TaskData`)."""
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
    backbone = reg.get("backbones", resolved.backbone_name(cfg, job.domain), dom).build(cfg, data)
    head_spec = reg.get("heads", resolved.head_name(cfg, job.domain), dom)
    n_outputs = job.task.n_classes if job.task.loss == "ce" else table.labels.shape[1]
    return TaskData(split, data, backbone, lambda: head_spec.build(backbone.out_dim, n_outputs, cfg), scaler)


def build_engine(job: Job, cfg: RunConfig, data, backbone, head, device) -> Engine:
    """θ (``backbone`` and the method's objectives), w (a copy of ``backbone`` and ``head``),
    the batch streams the method reads (level II and III's only when it ``learns``) and the
    engine over them, with a fresh instance of the method."""
    rule = weighting(job)
    names = objective_names(job, rule)
    objectives = [job.registry.get("objectives", n).build(backbone, data.corpus, cfg) for n in names]
    theta = PretrainModel(backbone, objectives, names)
    w = TaskModel(copy.deepcopy(backbone), head)
    learn = rule.learns
    p, f, r = cfg.pretrain, cfg.finetune, cfg.reweight
    shard, pin = (distributed.rank(), distributed.world_size()), device.type == "cuda"
    corpus = BatchStream(data.corpus, p.batch_size, data.corpus_collate, cfg.seed, cfg.num_workers, shard, pin)
    # every stream with its own workers: on a GPU, levels II and III's batches are drawn while it runs
    train = BatchStream(data.train, f.batch_size, data.task_collate, cfg.seed + 1, cfg.num_workers, shard,
                        pin) if learn else None
    val = BatchStream(data.val, r.batch_size, data.task_collate, cfg.seed + 2, cfg.num_workers, shard,
                      pin) if learn else None
    return Engine(theta, w, corpus, train, val, cfg, job.task.loss if learn else "", device, weighting=rule)


def continued_pretraining(job: Job, cfg: RunConfig, data, backbone, head, device, folder: Path,
                          quiet: bool, loggers: RunLoggers | None = None):
    """Levels I–III for ``cfg.steps`` global steps; returns the final θ backbone.

    Each step's record goes to ``weights.csv``/``losses.csv`` (rank 0), to the trackers, and
    to the bar's status line (or, ``quiet``, a log line every ``log_every`` steps)."""
    engine = build_engine(job, cfg, data, backbone, head, device)
    theta = engine.theta
    checkpoint = folder / CHECKPOINT
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
        if said := overconfidence_line(folder):
            atomic_write(folder / DETAILS, lambda tmp: tmp.write_text(overconfidence_details(folder)))
            log.log(said[0], "seed %d: %s", cfg.seed, said[1])
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
