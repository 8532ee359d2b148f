"""The ``tapweight`` command line (Typer + rich).

User errors print one line and exit with code 2; bugs keep their tracebacks. A run stopped
by SIGINT or SIGTERM prints one line (where it stopped, how to continue) and exits with
130 or 143. Under ``torchrun`` only rank 0 prints the results, INFO lines and warnings;
another rank prints its own errors, prefixed with its rank.

Plugins add commands through the ``register_commands`` hook; a command name that is taken
(by the core or an earlier plugin) stays with its owner and the newcomer is reported.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

import tapweight
from tapweight import interrupts
from tapweight.config import METHODS
from tapweight.errors import RankZeroFailed, TapweightError
from tapweight.interrupts import Interrupted
from tapweight.job.folder import saved_task as _saved_task
from tapweight.job.log import OursOrWarnings
from tapweight.plugin import manager as plugin_manager

# Only what every command needs is imported above: `tapweight --help`, `--version`, `list`
# and `plugins` answer without importing torch (seconds). The commands that train import
# the runner (and torch with it) when they are called.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Task-adaptive continued pretraining with learned objective weights.")
LISTABLE = ("domains", "tasks", "objectives", "backbones", "heads", "datasets", "loggers", "methods")


def _console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that, when the stream is not a terminal (a file,
    a pipe, a scheduler's log), neither wraps nor cuts lines: paths stay whole."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 100_000)


def _quiet(flag: bool) -> bool:
    """``--quiet``, implied when stderr is not a terminal: a progress bar redrawn into a log
    file is noise, a log line every ``log_every`` steps is not."""
    return flag or not sys.stderr.isatty()


def _version(value: bool) -> None:
    if value:
        print(f"tapweight {tapweight.__version__}")
        raise typer.Exit()


@app.callback()
def _app(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                               help="print the version and exit")] = False):
    """Task-adaptive continued pretraining with learned objective weights."""


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
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars "
                                        "(implied when stderr is not a terminal)")] = False,
):
    """Continued pretraining with learned weights, final fine-tune, test metric."""
    from tapweight.job import runner

    options = {key: value for key, value in {
        "method": method, "steps": steps, "data": data, "corpus": corpus, "init": init,
        "device": device, "seeds": _seeds(seeds) if seeds else None}.items() if value is not None}
    if resume is not None:
        if options or set_ or config or model or out_dir:
            raise TapweightError("--resume continues a run with its saved config.yaml; "
                                 "drop the other options")
        return _resume(resume, quiet, expect=(domain, task))
    registry = plugin_manager.build_registry()
    options.update(_model_options(domain, model, registry))
    job = runner.resolve(domain, task, preset, config, options, set_ or [], registry=registry)
    _print_summary(runner.run(job, out_dir, _quiet(quiet)))


def _model_options(domain: str, model: str | None, registry=None) -> dict:
    """The config keys ``--model`` sets in ``domain`` (none without ``--model``); the plugins
    are loaded for it unless ``registry`` is given."""
    if model is None:
        return {}
    from tapweight.commands.api import model_option

    return model_option(registry or plugin_manager.build_registry(), domain, model)


def _resume(folder: Path, quiet: bool, expect: tuple[str, str] | None = None) -> None:
    from tapweight.commands import base_pretraining as pretrain
    from tapweight.job import runner

    domain, task = _saved_task(folder)
    if expect is not None and expect != (domain, task):
        raise TapweightError(f"'{folder}' is a run of {domain}/{task or 'pretrain'}, not "
                             f"{expect[0]}/{expect[1] or 'pretrain'}")
    if not task:  # a `tapweight pretrain` folder
        job = pretrain.resolve(domain, "paper", str(folder / "config.yaml"))
        _print_encoder(pretrain.pretrain(job, folder, _quiet(quiet), resume=True))
        return
    job = runner.resolve(domain, task, "paper", str(folder / "config.yaml"))
    _print_summary(runner.run(job, folder, _quiet(quiet), resume=True))


@app.command("resume")
def resume_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder made by `tapweight run` or `tapweight pretrain`")],
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars "
                                        "(implied when stderr is not a terminal)")] = False,
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
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of a progress bar "
                                        "(implied when stderr is not a terminal)")] = False,
):
    """Base pretraining on an unlabelled corpus (level I, fixed weights); writes an encoder
    for `tapweight run ... --init`."""
    from tapweight.commands import base_pretraining as pretrain

    options = {key: value for key, value in {
        "method": method, "steps": steps, "corpus": corpus, "init": init, "device": device}.items()
        if value is not None}
    if resume is not None:
        if options or set_ or config or model or out_dir:
            raise TapweightError("--resume continues a pretraining run with its saved config.yaml; "
                                 "drop the other options")
        return _resume(resume, quiet, expect=(domain, ""))
    registry = plugin_manager.build_registry()
    options.update(_model_options(domain, model, registry))
    job = pretrain.resolve(domain, preset, config, options, set_ or [], registry=registry)
    _print_encoder(pretrain.pretrain(job, out_dir, _quiet(quiet)))


def _print_encoder(summary: dict) -> None:
    from tapweight import distributed

    if distributed.is_main():
        print(f"encoder: {summary['encoder']}")  # plain: a path rich would wrap


def _print_summary(summary: dict) -> None:
    """The per-seed table, mean ± std over several seeds, and where the run folder is (rank
    0 only: the other ranks hold the same)."""
    from tapweight import distributed
    from tapweight.job.report import mean_pm_std, number

    if not distributed.is_main():
        return
    table = RichTable(title=escape(f"{summary['domain']}/{summary['task']} — {summary['method']}"))
    table.add_column("seed")
    table.add_column(f"val {summary['metric']}")
    table.add_column(f"test {summary['metric']}")
    for seed, result in summary["seeds"].items():
        table.add_row(str(seed), number(result.get("val")), number(result.get("test")))
    if len(summary["seeds"]) > 1:
        table.add_row("mean ± std", mean_pm_std(summary, "val"), mean_pm_std(summary, "test"))
    console = _console()
    console.print(table)
    if summary.get("folder"):
        console.print(f"run folder: {summary['folder']}", markup=False, highlight=False)


@app.command("list")
def list_command(what: Annotated[str, typer.Argument(help=" | ".join(LISTABLE))] = "tasks"):
    """List what the loaded plugins provide."""
    if what not in LISTABLE:
        raise TapweightError(f"cannot list '{what}'; choose one of {', '.join(LISTABLE)}")
    if what == "methods":
        for name in METHODS:
            print(name)
        return
    registry = plugin_manager.build_registry()
    table = RichTable(show_header=True)
    table.add_column(what[:-1])
    table.add_column("plugin")
    table.add_column("description")
    for name in registry.names(what):
        spec = registry.tables[what][name]
        table.add_row(*map(escape, (name, registry.owners[(what, name)], getattr(spec, "description", ""))))
    if what == "domains":  # escaped: rich would read the fix's [nlp] as markup and drop it
        for problem in registry.problems:
            table.add_row(*map(escape, (problem.plugin, "unavailable",
                                        f"{problem.message}. {problem.fix}".strip())))
    _console().print(table)


@app.command("plugins")
def plugins_command():
    """Print the plugins as JSON: name, version, hooks, what they provide, problems."""
    print(json.dumps(plugin_manager.plugin_report(), indent=2))


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="a run folder")]):
    """Summarise a run folder: config, final λ, metrics."""
    metrics = run_dir / "metrics.json"
    _saved_task(run_dir)
    console = _console()
    console.print(f"[bold]{escape(str(run_dir))}[/bold]")
    console.print(f"config.yaml:\n{(run_dir / 'config.yaml').read_text().rstrip()}", markup=False,
                  highlight=False)
    for csv in sorted(run_dir.glob("seed*/weights.csv")):
        from tapweight.job.report import overconfidence_line, signal_line

        step, lam = _last_weights(csv)
        console.print(f"{csv.parent.name}: step {step}, λ {lam}", markup=False, highlight=False)
        for line in (signal_line(csv.parent), overconfidence_line(csv.parent)):
            if line:
                console.print(f"{csv.parent.name}: {line}", markup=False, highlight=False)
    if metrics.is_file():
        _print_summary(_read_summary(metrics))
    else:
        console.print("not finished: no metrics.json yet (continue it with `tapweight resume`)",
                      markup=False)


def _last_weights(csv: Path) -> tuple[int, str]:
    """The last step of a ``weights.csv`` and its λ, or a one-line error for a damaged file."""
    import pandas as pd

    fix = "it is rewritten by `tapweight resume` from the checkpoint"
    try:
        last = pd.read_csv(csv).iloc[-1]
        return int(last["step"]), ", ".join(f"{k}={float(v):.3f}" for k, v in last.items() if k != "step")
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, pd.errors.ParserError) as err:
        reason = " ".join(str(err).split())[:100] or type(err).__name__
        raise TapweightError(f"{csv} is damaged ({reason}): {fix}") from None


def _read_summary(path: Path) -> dict:
    """A run's ``metrics.json``, checked to be the summary tapweight writes."""
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise TapweightError(f"{path} is not valid JSON ({err}): it is rewritten when the "
                             "run finishes (`tapweight resume`)") from None
    keys = ("domain", "task", "method", "metric", "seeds")
    if not isinstance(summary, dict) or not all(k in summary for k in keys) \
            or not isinstance(summary["seeds"], dict) \
            or not all(isinstance(r, dict) for r in summary["seeds"].values()):
        raise TapweightError(f"{path} is not a tapweight summary (it needs {', '.join(keys)}): "
                             "it is rewritten when the run finishes (`tapweight resume`)")
    return summary


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record comes (as rich's
    console does), not on the stream of the moment it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    data: Annotated[str, typer.Option(help="file of new inputs (SMILES CSV/.smi, texts, feature CSV: "
                                           "the domain's)")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="CSV to write (default <data>_preds.csv "
                                                                   "here)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="use this seed's model (default: the mean of "
                                                     "every seed's)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
):
    """Score new inputs with the run's final fine-tuned model(s); invalid rows are reported."""
    from tapweight.commands.predict import predict as predict_inputs
    from tapweight.job.report import write_csv

    frame = predict_inputs(run_dir, data, seed, device)
    target = out_file or Path(f"{Path(data).name.split('.')[0]}_preds.csv")
    write_csv(frame, target)
    _console().print(f"{len(frame)} rows -> {target}", soft_wrap=True, markup=False)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    format_: Annotated[str, typer.Option("--format", help="the domain's: hf (nlp); torchvision, "
                                                           "imagemol (mol)")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="folder to write (default "
                                                                  "RUN/export/<format>-seed<k>)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="which seed's model (default: the first)")] = None,
    finetuned: Annotated[bool, typer.Option("--finetuned", help="the fine-tuned model instead of the "
                                                                 "continued-pretrained encoder")] = False,
):
    """Write the run's encoder (or fine-tuned model) in a format another library loads."""
    from tapweight.commands.export import export as export_model

    for path in export_model(run_dir, format_, out_dir, seed, finetuned):
        _console().print(str(path), soft_wrap=True, markup=False)


def _list(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise TapweightError(f"{what} takes names separated by commas, got '{text}'")
    return items


@app.command()
def compare(
    domain: Annotated[str, typer.Argument(help="domain, e.g. mol, nlp")],
    task: Annotated[Optional[str], typer.Argument(help="task, or several separated by commas")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="more tasks, comma-separated (e.g. bbbp,bace)")] = None,
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = "none,uniform,tapweight",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds; every method runs each")] = "0,1,2",
    baseline: Annotated[Optional[str], typer.Option(help="the method the others are paired with "
                                                         "(default: the first)")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="folder of the runs and the comparison "
                                                                  "(default runs/compare-<domain>-<tasks>)")] = None,
    preset: Annotated[str, typer.Option(help="cpu | paper | auto")] = "auto",
    config: Annotated[Optional[str], typer.Option(help="YAML file of config keys")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="global steps of continued pretraining")] = None,
    data: Annotated[Optional[str], typer.Option(help="labelled data file or folder")] = None,
    init: Annotated[Optional[str], typer.Option(help="pretrained backbone checkpoint")] = None,
    model: Annotated[Optional[str], typer.Option(help="model name or folder (domains with a model option)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="log lines instead of progress bars")] = False,
):
    """Run (or reuse) methods × seeds × tasks; write comparison.md/.csv/.png with paired tests."""
    from tapweight.commands.compare import compare as compare_runs

    names = _list(task, "TASK") if task else []
    names += _list(tasks, "--tasks") if tasks else []
    if not names:
        raise TapweightError("name a task (tapweight compare DOMAIN TASK) or several (--tasks a,b)")
    options = {key: value for key, value in {"steps": steps, "data": data, "init": init,
                                             "device": device}.items() if value is not None}
    options.update(_model_options(domain, model))
    target = out_dir or Path("runs") / f"compare-{domain}-{'-'.join(names)}"
    compare_runs(domain, names, _list(methods, "--methods"), _seeds(seeds), target, baseline, preset, config,
                 options, set_ or [], _quiet(quiet))
    _console().print(f"comparison -> {target / 'comparison.md'}", soft_wrap=True, markup=False)


def _setup_logging() -> None:
    """Our INFO lines and everyone's warnings on stderr (once per process): through rich on a
    terminal, as plain unwrapped lines (``INFO tapweight.job.runner: ...``) into a file or pipe.
    Under torchrun, ranks other than 0 show errors only (they hold the same data and config,
    so their INFO lines and warnings repeat rank 0's)."""
    root = logging.getLogger()
    if any(getattr(h, "tapweight", False) for h in root.handlers):
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=_console(stderr=True), show_path=False, markup=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OursOrWarnings())
    handler.tapweight = True
    if _rank() != 0:
        handler.setLevel(logging.ERROR)
    root.setLevel(logging.INFO if _rank() == 0 else logging.WARNING)
    root.addHandler(handler)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


_commands_from: set[str] = set()


def _command_name(info) -> str:
    """The name a Typer command or group answers to."""
    if getattr(info, "typer_instance", None) is not None:
        return info.name or info.typer_instance.info.name or ""
    return info.name or typer.main.get_command_name(info.callback.__name__)


def _add_plugin_commands() -> None:
    """Let each plugin add its commands, once, in plugin order; a name that is taken stays
    with its owner, and a failing plugin is reported and skipped (nothing half-added)."""
    plugin_manager.load_entry_points()
    warn = logging.getLogger("tapweight").warning
    hook = plugin_manager.pm.hook.register_commands
    for impl in plugin_manager.in_registration_order(hook.get_hookimpls()):
        if impl.plugin_name in _commands_from:
            continue
        _commands_from.add(impl.plugin_name)
        lists = (app.registered_commands, app.registered_groups)
        before = [len(entries) for entries in lists]
        taken = {_command_name(info) for entries in lists for info in entries}
        try:
            impl.function(cli=app)
        except (Exception, SystemExit) as err:  # a broken plugin must not take the command line down
            for entries, n in zip(lists, before):
                del entries[n:]
            warn("plugin %s: register_commands failed: %r", impl.plugin_name, err)
            continue
        for entries, n in zip(lists, before):
            for info in entries[n:]:
                name = _command_name(info)
                if name in taken:
                    entries.remove(info)
                    warn("plugin %s: command '%s' is taken (by tapweight or an earlier plugin); "
                         "the plugin's command is not added: rename it", impl.plugin_name, name)
                taken.add(name)


def main(argv: list[str] | None = None) -> None:
    """The command line; a ``torchrun`` rank ends through :func:`_end_rank`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _main(argv)
    try:
        _main(argv)
    except SystemExit as err:
        _end_rank(err.code)
    _end_rank(0)


def _end_rank(code: int | str | None) -> None:
    """End a ``torchrun`` rank with ``os._exit``, after flushing the logs, skipping the
    interpreter's finalization. Gloo's worker threads outlive the run (DDP holds the process
    group even past ``destroy_process_group``, torch 2.14), and one that frees the tensors of
    a finished collective while the interpreter shuts down aborts the process ("terminate
    called without an active exception", SIGABRT) after the run has written its results."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else int(code is not None))


def _main(argv: list[str] | None) -> None:
    _setup_logging()
    interrupts.record_sigint()
    _add_plugin_commands()
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:  # not command.main(): it turns Ctrl-C into exit 0 and EOFError into a silent abort
        with command.make_context("tapweight", args) as ctx:
            command.invoke(ctx)
    except Interrupted as err:  # rank 0 knows the step it saved
        _fail(str(err), err.exit_code, every_rank=False)
    except KeyboardInterrupt:
        _fail("interrupted", 128 + signal.SIGINT)
    except RankZeroFailed:
        sys.exit(2)  # rank 0 prints it
    except TapweightError as err:
        _fail(f"error: {err}", 2)
    except typer.Exit as err:  # --help, --version
        sys.exit(err.exit_code)
    except typer.TyperException as err:  # click's usage errors, as typer vendors them
        if err.__class__.__name__ == "NoArgsIsHelpError":
            err.show()
            sys.exit(0)
        _fail(f"error: {' '.join(err.format_message().split())}", err.exit_code)


def _fail(line: str, code: int, every_rank: bool = True) -> None:
    """Print the one line (rank 0 as is, another rank with its number) and exit."""
    if _rank() == 0 or every_rank:
        print(line if _rank() == 0 else f"[rank {_rank()}] {line}", file=sys.stderr)
    sys.exit(code)
