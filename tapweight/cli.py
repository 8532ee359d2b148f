"""The ``tapweight`` command line (Typer + rich).

User errors print one line and exit with code 2; bugs keep their tracebacks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from omegaconf import OmegaConf
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table as RichTable

from tapweight import plugins as plugin_manager
from tapweight import runner
from tapweight.config import METHODS
from tapweight.errors import TapweightError
from tapweight.runner import OursOrWarnings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Task-adaptive continued pretraining with learned objective weights.")
out = Console()
LISTABLE = ("domains", "tasks", "objectives", "backbones", "heads", "datasets", "methods")


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TapweightError(f"--seeds takes integers separated by commas, got '{text}'") from None


@app.command()
def run(
    domain: Annotated[str, typer.Argument(help="domain, e.g. mol, nlp")],
    task: Annotated[str, typer.Argument(help="task, e.g. bbbp, sst2 (see `tapweight list tasks`)")],
    method: Annotated[Optional[str], typer.Option(help="tapweight|uniform|fixed|single:<objective>|none")] = None,
    preset: Annotated[str, typer.Option(help="cpu | paper | auto (paper on CUDA, else cpu)")] = "auto",
    config: Annotated[Optional[str], typer.Option(help="YAML file of config keys")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="global steps of continued pretraining")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds, e.g. 0,1,2")] = None,
    data: Annotated[Optional[str], typer.Option(help="labelled data file or folder")] = None,
    corpus: Annotated[Optional[str], typer.Option(help="pretraining corpus file (default: train inputs)")] = None,
    init: Annotated[Optional[str], typer.Option(help="pretrained backbone checkpoint")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name or folder (domains with a model option)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/<...>)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars")] = False,
):
    """Continued pretraining with learned weights, final fine-tune, test metric."""
    options = {key: value for key, value in {
        "method": method, "steps": steps, "data": data, "corpus": corpus, "init": init,
        "device": device, "seeds": _seeds(seeds) if seeds else None}.items() if value is not None}
    if resume is not None:
        if options or set_ or config or model or out_dir:
            raise TapweightError("--resume continues a run with its saved config.yaml; "
                                 "drop the other options")
        return _resume(resume, quiet, expect=(domain, task))
    registry = plugin_manager.build_registry()
    _model_option(registry, domain, model, options)
    job = runner.resolve(domain, task, preset, config, options, set_ or [], registry=registry)
    _print_summary(runner.run(job, out_dir, quiet))


def _model_option(registry, domain: str, model: str | None, options: dict) -> None:
    """``--model`` as the domain's ``model`` option, for the domains that have one."""
    if model is not None:
        if "model" not in {f.name for f in dataclasses.fields(registry.require_domain(domain).options)}:
            raise TapweightError(f"domain '{domain}' has no --model option; use --init for weights")
        options[f"{domain}.model"] = model


def _resume(folder: Path, quiet: bool, expect: tuple[str, str] | None = None) -> None:
    saved = folder / "config.yaml"
    if not saved.is_file():
        raise TapweightError(f"'{folder}' is not a run folder (no config.yaml)")
    head = OmegaConf.load(saved)
    if expect is not None and expect != (head.domain, head.task):
        raise TapweightError(f"'{folder}' is a run of {head.domain}/{head.task}, "
                             f"not {expect[0]}/{expect[1]}")
    job = runner.resolve(head.domain, head.task, "paper", str(saved))
    _print_summary(runner.run(job, folder, quiet, resume=True))


@app.command("resume")
def resume_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder made by `tapweight run`")],
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
):
    """Continue an interrupted run from its last checkpoint."""
    _resume(run_dir, quiet)


@app.command("pretrain")
def pretrain_command(
    domain: Annotated[str, typer.Argument(help="domain, e.g. mol, nlp")],
    corpus: Annotated[Optional[str], typer.Option(help="unlabelled corpus file (the domain's format)")] = None,
    method: Annotated[Optional[str], typer.Option(help="uniform|fixed|single:<objective>")] = None,
    preset: Annotated[str, typer.Option(help="cpu | paper | auto (paper on CUDA, else cpu)")] = "auto",
    config: Annotated[Optional[str], typer.Option(help="YAML file of config keys")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="level I steps")] = None,
    init: Annotated[Optional[str], typer.Option(help="checkpoint to start from")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name or folder (domains with a model option)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/<...>)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the pretraining run in this folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of a progress bar")] = False,
):
    """Base pretraining on an unlabelled corpus (level I, fixed weights); writes an encoder
    for `tapweight run ... --init`."""
    from tapweight import pretrain

    options = {key: value for key, value in {
        "method": method, "steps": steps, "corpus": corpus, "init": init, "device": device}.items()
        if value is not None}
    if resume is not None:
        if options or set_ or config or model or out_dir:
            raise TapweightError("--resume continues a pretraining run with its saved config.yaml; "
                                 "drop the other options")
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise TapweightError(f"'{resume}' is not a run folder (no config.yaml)")
        head = OmegaConf.load(saved)
        if head.domain != domain or head.task:
            raise TapweightError(f"'{resume}' is not a pretraining run of domain '{domain}' "
                                 f"({head.domain}/{head.task or 'pretrain'})")
        job = pretrain.resolve(domain, "paper", str(saved))
        summary = pretrain.pretrain(job, resume, quiet, resume=True)
    else:
        registry = plugin_manager.build_registry()
        _model_option(registry, domain, model, options)
        job = pretrain.resolve(domain, preset, config, options, set_ or [], registry=registry)
        summary = pretrain.pretrain(job, out_dir, quiet)
    print(f"encoder: {summary['encoder']}")  # plain: a path rich would wrap


def _print_summary(summary: dict) -> None:
    table = RichTable(title=f"{summary['domain']}/{summary['task']} — {summary['method']}")
    table.add_column("seed")
    table.add_column(f"val {summary['metric']}")
    table.add_column(f"test {summary['metric']}")
    for seed, result in summary["seeds"].items():
        table.add_row(str(seed), f"{result['val']:.4f}", f"{result['test']:.4f}")
    table.add_row("mean ± std", f"{summary['val_mean']:.4f} ± {summary['val_std']:.4f}",
                  f"{summary['test_mean']:.4f} ± {summary['test_std']:.4f}")
    out.print(table)


@app.command("list")
def list_command(what: Annotated[str, typer.Argument(help=" | ".join(LISTABLE))] = "tasks"):
    """List what the loaded plugins provide."""
    if what not in LISTABLE:
        raise TapweightError(f"cannot list '{what}'; choose one of {', '.join(LISTABLE)}")
    if what == "methods":
        for name in METHODS:
            out.print(name)
        return
    registry = plugin_manager.build_registry()
    table = RichTable(show_header=True)
    table.add_column(what[:-1])
    table.add_column("plugin")
    table.add_column("description")
    for name in registry.names(what):
        spec = registry.tables[what][name]
        table.add_row(name, registry.owners[(what, name)], getattr(spec, "description", ""))
    if what == "domains":
        for problem in registry.problems:
            table.add_row(problem.plugin, "unavailable", f"{problem.message}. {problem.fix}".strip())
    out.print(table)


@app.command("plugins")
def plugins_command():
    """Print the plugins as JSON: name, version, hooks, what they provide, problems."""
    print(json.dumps(plugin_manager.plugin_report(), indent=2))


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="a run folder")]):
    """Summarise a run folder: config, final λ, metrics."""
    metrics = run_dir / "metrics.json"
    if not (run_dir / "config.yaml").is_file():
        raise TapweightError(f"'{run_dir}' is not a run folder (no config.yaml)")
    out.print(f"[bold]{run_dir}[/bold]")
    for csv in sorted(run_dir.glob("seed*/weights.csv")):
        import pandas as pd

        last = pd.read_csv(csv).iloc[-1]
        lam = ", ".join(f"{k}={v:.3f}" for k, v in last.items() if k != "step")
        out.print(f"{csv.parent.name}: step {int(last['step'])}, λ {lam}")
    if metrics.is_file():
        _print_summary(json.loads(metrics.read_text()))
    else:
        out.print("not finished: no metrics.json yet (continue it with `tapweight resume`)")


def _setup_logging() -> None:
    """Our INFO lines and everyone's warnings, on stderr through rich (once per process)."""
    root = logging.getLogger()
    if any(getattr(h, "tapweight", False) for h in root.handlers):
        return
    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
    handler.addFilter(OursOrWarnings())
    handler.tapweight = True
    root.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    root.addHandler(handler)


_commands_from: set[str] = set()


def _add_plugin_commands() -> None:
    """Let each plugin add its commands, once; a failing plugin is reported and skipped."""
    plugin_manager.load_entry_points()
    for impl in plugin_manager.pm.hook.register_commands.get_hookimpls():
        if impl.plugin_name in _commands_from:
            continue
        _commands_from.add(impl.plugin_name)
        try:
            impl.function(cli=app)
        except Exception as err:  # a broken plugin must not take the command line down
            logging.getLogger("tapweight").warning("plugin %s: register_commands failed: %r",
                                                   impl.plugin_name, err)


def main(argv: list[str] | None = None) -> None:
    _setup_logging()
    _add_plugin_commands()
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="tapweight", standalone_mode=False)
    except TapweightError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as err:  # click's usage errors, as typer vendors them
        print(f"error: {err.format_message()}", file=sys.stderr)
        sys.exit(err.exit_code)
