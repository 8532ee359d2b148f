"""``tapweight pretrain DOMAIN --corpus FILE``: base pretraining, level I alone, no task.

ImageMol's own stage before TapWeight's: train an encoder on a large unlabelled corpus with
weights that need no task (methods ``uniform``, ``fixed``, ``single:<objective>``, and
``gradnorm``, which balances the objectives' gradients), so that
continued pretraining has a pretrained start. The domain reads the corpus
(`build_corpus`); the engine (``learn_weights=False``: level I
only), checkpoints, resume, progress and logging are
``tapweight run``'s (`tapweight.job.runner`, `tapweight.job.seed`).

Run folder:

    config.yaml  log.txt  checkpoint.pt  weights.csv  losses.csv  weights.png  pretrain.json
    backbone.safetensors    the encoder: tapweight run DOMAIN TASK --init <folder>/backbone.safetensors
    <name>                  each file the domain's corpus was encoded with (DomainData.files),
                            e.g. nlp's tokenizer/ when the tiny model's tokenizer was trained on it
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from tapweight import distributed
from tapweight.config import RunConfig, build_config, layer_from_dict
from tapweight.errors import TapweightError
from tapweight.job import resolved
from tapweight.job.job import Job
from tapweight.job.log import RunLog
from tapweight.job.report import write_json
from tapweight.job.runner import in_run_folder, open_run_folder, pick_preset, user_layers
from tapweight.job.seed import continued_pretraining, objective_names, seed_everything, weighting
from tapweight.job.session import Session
from tapweight.plugin.manager import build_registry
from tapweight.plugin.registry import Registry

log = logging.getLogger("tapweight")

ENCODER = "backbone.safetensors"
SUMMARY = "pretrain.json"


def resolve(domain: str, preset: str = "auto", config_file: str | None = None,
            options: dict | None = None, sets: list[str] = (),
            registry: Registry | None = None) -> Job:
    """The config of a base pretraining run, lowest precedence first: method ``uniform``,
    the domain's preset, its ``pretrain_presets`` entry of the same name, ``config_file``,
    command-line ``options``, ``--set`` strings."""
    registry = registry or build_registry()
    dom = registry.require_domain(domain)
    if dom.build_corpus is None:
        raise TapweightError(f"domain '{domain}' cannot read a corpus without labels (its plugin "
                             "sets no Domain.build_corpus, see docs/hooks.md); use `tapweight run` "
                             "on one of its tasks")
    preset = pick_preset(dom, preset, tuple(dom.pretrain_presets))
    layers = [
        ("tapweight pretrain", layer_from_dict({"domain": domain, "method": "uniform"}, domain)),
        (f"preset {preset}", layer_from_dict(dict(dom.presets.get(preset, {})), domain)),
        (f"pretrain preset {preset}", layer_from_dict(dict(dom.pretrain_presets.get(preset, {})), domain)),
        *user_layers(domain, config_file, options, sets),
        ("no task", layer_from_dict({"task": ""}, domain)),  # a run's config.yaml names one
    ]
    cfg = build_config(dom.options, layers)
    if not cfg.corpus:
        raise TapweightError("tapweight pretrain needs --corpus FILE, the unlabelled corpus to "
                             "pretrain on")
    job = Job(cfg, registry, dom, None, preset)
    rule = weighting(job)
    if rule.learns or not rule.pretrains:
        raise TapweightError(f"tapweight pretrain trains level I alone, with weights that need no task: "
                             f"--method uniform, fixed, single:<objective> or gradnorm, not '{cfg.method}' "
                             "(a method that learns λ from a task: tapweight run)")
    objective_names(job, rule)  # fail on a bad objective before any work is done
    return job


def default_out(cfg: RunConfig) -> Path:
    method = cfg.method.replace(":", "-")
    return Path("runs") / f"{cfg.domain}-pretrain-{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def pretrain(job: Job, out: Path | None = None, quiet: bool = False, resume: bool = False) -> dict:
    """Level I for ``cfg.steps`` steps on the corpus; writes the run folder (module
    docstring) and returns its summary. With ``resume``, the folder's checkpoint is continued.
    The run folder, interrupts and checkpoints are ``tapweight run``'s (job/session.py)."""
    return in_run_folder(job, out or default_out(job.cfg), resume, lambda out, device, run_log, session:
                         _pretrain(job, out, device, quiet, resume, run_log, session))


def _pretrain(job: Job, out: Path, device: torch.device, quiet: bool, resume: bool,
              run_log: RunLog, session: Session) -> dict:
    cfg = job.cfg
    seed_everything(cfg.seed)
    started = time.perf_counter()
    data = job.domain.build_corpus(cfg, cfg.corpus)  # a bad corpus leaves no folder
    ready = time.perf_counter() - started
    main = distributed.is_main()
    open_run_folder(out, cfg, resume, run_log)
    log.info("pretrain %s on %s, method %s, preset %s, %d steps -> %s", cfg.domain, cfg.corpus,
             cfg.method, job.preset, cfg.steps, out)
    log.info("corpus read in %.1f s", ready)
    for key, value in data.info.items():
        log.info("data %s: %s", key, value)
    backbone = job.registry.get("backbones", resolved.backbone_name(cfg, job.domain),
                                cfg.domain).build(cfg, data)
    session.begin_seed(cfg.seed, 1)
    # level II never runs: w's head is never used (the engine wants a w all the same)
    continued_pretraining(job, cfg, data, backbone, torch.nn.Identity(), device, out, quiet)
    summary = {"domain": cfg.domain, "method": cfg.method, "steps": cfg.steps, "corpus": cfg.corpus,
               "encoder": str(out / ENCODER), "files": sorted(data.files)}
    if main:
        for name, source in data.files.items():
            keep(Path(source), out / name)
        write_json(summary, out / SUMMARY)
    log.info("encoder: %s (tapweight run %s TASK --init %s)", out / ENCODER, cfg.domain, out / ENCODER)
    return summary


def keep(source: Path, target: Path) -> None:
    """Copy a file or folder the corpus was encoded with into the run folder."""
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
    log.info("kept %s as %s", source, target)
