"""The commands that train: ``run``, ``resume``, ``pretrain`` (base pretraining) and ``compare``.

Each imports the runner (and torch with it) only when it is called, so that ``tapweight
--help`` and the read-only commands start in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tapweight.commands.console import (
    console,
    is_quiet,
    model_options,
    names_list,
    print_encoder,
    print_summary,
    seeds_list,
)
from tapweight.errors import TapweightError
from tapweight.job.folder import saved_task
from tapweight.plugin import manager as plugin_manager

KEEP_CHECKPOINT = typer.Option("--keep-checkpoint/--drop-checkpoint", show_default=False,
                               help="keep each finished seed's checkpoint.pt (the engine's state) or delete it "
                                    "once its final model is written (default: keep_checkpoint, false)")


BACKBONE_HELP = "see `tapweight list backbones` (default: the domain's)"


def run(
    domain: Annotated[str, typer.Argument(help="domain, e.g. mol, nlp")],
    task: Annotated[str, typer.Argument(help="task, e.g. bbbp, sst2 (see `tapweight list tasks`)")],
    method: Annotated[Optional[str], typer.Option(help="see `tapweight list methods`")] = None,
    preset: Annotated[str, typer.Option(help="cpu | paper | auto (paper on CUDA, else cpu)")] = "auto",
    config: Annotated[Optional[str], typer.Option(help="YAML file of config keys")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="global steps of continued pretraining")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds, e.g. 0,1,2")] = None,
    data: Annotated[Optional[str], typer.Option(help="labelled data file or folder")] = None,
    corpus: Annotated[Optional[str], typer.Option(help="pretraining corpus file (default: train inputs)")] = None,
    backbone: Annotated[Optional[str], typer.Option(help=BACKBONE_HELP)] = None,
    init: Annotated[Optional[str], typer.Option(help="pretrained backbone checkpoint")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name or folder (domains with a model option)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/<...>)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this folder")] = None,
    keep_checkpoint: Annotated[Optional[bool], KEEP_CHECKPOINT] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars "
                                        "(implied when stderr is not a terminal)")] = False,
):
    """Continued pretraining with learned weights, final fine-tune, test metric."""
    from tapweight.commands.api import start

    options = {key: value for key, value in {
        "method": method, "steps": steps, "data": data, "corpus": corpus, "init": init,
        "backbone": backbone, "device": device, "seeds": seeds_list(seeds) if seeds else None, "model": model,
        "keep_checkpoint": keep_checkpoint}.items() if value is not None}
    if resume is not None:
        if options or set_ or config or out_dir:
            raise TapweightError("--resume continues a run with its saved config.yaml; "
                                 "drop the other options")
        return _resume(resume, quiet, expect=(domain, task))
    print_summary(start(domain, task, preset, config, options, set_ or [], out_dir, is_quiet(quiet)))


def _resume(folder: Path, quiet: bool, expect: tuple[str, str] | None = None) -> None:
    from tapweight.commands import base_pretraining as pretrain
    from tapweight.job import runner

    domain, task = saved_task(folder)
    if expect is not None and expect != (domain, task):
        raise TapweightError(f"'{folder}' is a run of {domain}/{task or 'pretrain'}, not "
                             f"{expect[0]}/{expect[1] or 'pretrain'}")
    if not task:  # a `tapweight pretrain` folder
        job = pretrain.resolve(domain, "paper", str(folder / "config.yaml"))
        print_encoder(pretrain.pretrain(job, folder, is_quiet(quiet), resume=True))
        return
    job = runner.resolve(domain, task, "paper", str(folder / "config.yaml"))
    print_summary(runner.run(job, folder, is_quiet(quiet), resume=True))


def resume_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder made by `tapweight run` or `tapweight pretrain`")],
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars "
                                        "(implied when stderr is not a terminal)")] = False,
):
    """Continue an interrupted run from its last checkpoint."""
    _resume(run_dir, quiet)


def pretrain_command(
    domain: Annotated[str, typer.Argument(help="domain, e.g. mol, nlp")],
    corpus: Annotated[Optional[str], typer.Option(help="unlabelled corpus file (the domain's format)")] = None,
    method: Annotated[Optional[str], typer.Option(help="uniform|fixed|single:<objective>|gradnorm")] = None,
    preset: Annotated[str, typer.Option(help="cpu | paper | auto (paper on CUDA, else cpu)")] = "auto",
    config: Annotated[Optional[str], typer.Option(help="YAML file of config keys")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="level I steps")] = None,
    backbone: Annotated[Optional[str], typer.Option(help=BACKBONE_HELP)] = None,
    init: Annotated[Optional[str], typer.Option(help="checkpoint to start from")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name or folder (domains with a model option)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/<...>)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the pretraining run in this folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of a progress bar "
                                        "(implied when stderr is not a terminal)")] = False,
):
    """Base pretraining on an unlabelled corpus (level I, fixed weights); writes an encoder
    for `tapweight run ... --init`."""
    from tapweight.commands import base_pretraining as pretrain

    options = {key: value for key, value in {
        "method": method, "steps": steps, "corpus": corpus, "init": init, "backbone": backbone,
        "device": device}.items()
        if value is not None}
    if resume is not None:
        if options or set_ or config or model or out_dir:
            raise TapweightError("--resume continues a pretraining run with its saved config.yaml; "
                                 "drop the other options")
        return _resume(resume, quiet, expect=(domain, ""))
    registry = plugin_manager.build_registry()
    options.update(model_options(domain, model, registry))
    job = pretrain.resolve(domain, preset, config, options, set_ or [], registry=registry)
    print_encoder(pretrain.pretrain(job, out_dir, is_quiet(quiet)))


def compare(
    domain: Annotated[str, typer.Argument(help="domain, e.g. mol, nlp")],
    task: Annotated[Optional[str], typer.Argument(help="task, or several separated by commas")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="more tasks, comma-separated (e.g. bbbp,bace)")] = None,
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = "none,uniform,tapweight",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds; every method runs each")] = "0,1,2",
    baseline: Annotated[Optional[str], typer.Option(help="the method the others are paired with "
                                                         "(default: the first); one not in --methods is "
                                                         "read from its finished runs in --out")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="folder of the runs and the comparison "
                                                                  "(default runs/compare-<domain>-<tasks>)")] = None,
    preset: Annotated[str, typer.Option(help="cpu | paper | auto")] = "auto",
    config: Annotated[Optional[str], typer.Option(help="YAML file of config keys")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="global steps of continued pretraining")] = None,
    data: Annotated[Optional[str], typer.Option(help="labelled data file or folder")] = None,
    backbone: Annotated[Optional[str], typer.Option(help=BACKBONE_HELP)] = None,
    init: Annotated[Optional[str], typer.Option(help="pretrained backbone checkpoint")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name or folder (domains with a model option)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    keep_checkpoint: Annotated[Optional[bool], KEEP_CHECKPOINT] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars")] = False,
):
    """Run (or reuse) methods × seeds × tasks; write comparison.md/.csv/.png with paired tests."""
    from tapweight.commands.compare import compare as compare_runs

    names = names_list(task, "TASK") if task else []
    names += names_list(tasks, "--tasks") if tasks else []
    if not names:
        raise TapweightError("name a task (tapweight compare DOMAIN TASK) or several (--tasks a,b)")
    options = {key: value for key, value in {"steps": steps, "data": data, "init": init, "backbone": backbone,
                                             "device": device, "keep_checkpoint": keep_checkpoint}.items()
               if value is not None}
    options.update(model_options(domain, model))
    target = out_dir or Path("runs") / f"compare-{domain}-{'-'.join(names)}"
    compare_runs(domain, names, names_list(methods, "--methods"), seeds_list(seeds), target, baseline, preset, config,
                 options, set_ or [], is_quiet(quiet))
    console().print(f"comparison -> {target / 'comparison.md'}", soft_wrap=True, markup=False)
