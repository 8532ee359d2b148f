"""The ``tapweight`` command line (Typer + rich): the app, its commands, logging, exit codes.

The commands live beside this module: `training` (run, resume,
pretrain, compare) and `inspection` (list, plugins, show, predict,
export); this module only registers them and turns errors into exit codes.
User errors print one line and exit with code 2; bugs keep their tracebacks. A run stopped
by SIGINT or SIGTERM prints one line (where it stopped, how to continue) and exits with
130 or 143. Under ``torchrun`` only rank 0 prints the results, INFO lines and warnings;
another rank prints its own errors, prefixed with its rank.

Plugins add commands through the ``register_commands`` hook; a command name that is taken
(by the core or an earlier plugin) stays with its owner and the newcomer is reported.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from importlib.metadata import version
from typing import Annotated

import typer

from tapweight import interrupts
from tapweight.commands import inspection, training
from tapweight.commands.console import rank, stderr_handler
from tapweight.errors import RankZeroFailed, TapweightError
from tapweight.interrupts import Interrupted
from tapweight.job.log import library_errors
from tapweight.plugin import manager as plugin_manager

# Only what every command needs is imported above: `tapweight --help`, `--version`, `list`
# and `plugins` answer without importing torch (seconds). The commands that train import
# the runner (and torch with it) when they are called.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Task-adaptive continued pretraining with learned objective weights.")


def _version(value: bool) -> None:
    if value:
        print(f"tapweight {version('tapweight')}")
        raise typer.Exit()


@app.callback()
def _app(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                               help="print the version and exit")] = False):
    """Task-adaptive continued pretraining with learned objective weights."""


app.command()(training.run)
app.command("resume")(training.resume_command)
app.command("pretrain")(training.pretrain_command)
app.command("list")(inspection.list_command)
app.command("plugins")(inspection.plugins_command)
app.command()(inspection.show)
app.command()(inspection.predict)
app.command()(inspection.export)
app.command()(training.compare)


def _setup_logging() -> None:
    """Our INFO lines and everyone's warnings on stderr, once per process (`stderr_handler`).
    Under torchrun, ranks other than 0 show errors only (they hold the same data and config,
    so their INFO lines and warnings repeat rank 0's). Other libraries' errors wait
    (`LibraryErrors`): a bad input ends in our one error line."""
    root = logging.getLogger()
    if any(getattr(h, "tapweight", False) for h in root.handlers):
        return
    handler = stderr_handler()
    if rank() != 0:
        handler.setLevel(logging.ERROR)
    root.setLevel(logging.INFO if rank() == 0 else logging.WARNING)
    root.addHandler(handler)


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
    """The command line; a ``torchrun`` rank ends through `end_rank`."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or {"MASTER_ADDR", "RANK"} <= os.environ.keys()
    if not launched:  # as distributed.launched() decides, without importing torch
        return _main(argv)
    try:
        _main(argv)
    except SystemExit as err:
        end_rank(err.code)
    end_rank(0)


def end_rank(code: int | str | None) -> None:
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
    for errors in library_errors():  # until training starts or the command ends (job/log.py)
        errors.hold()
    try:
        _command(argv)
    finally:  # nothing is left held after an error line of ours (_fail drops it)
        for errors in library_errors():
            errors.release()


def _command(argv: list[str] | None) -> None:
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
    """Print the one line (rank 0 as is, another rank with its number) and exit; the errors
    other libraries logged before it are dropped from the console: this line says it."""
    for errors in library_errors():
        errors.drop()
    if rank() == 0 or every_rank:
        print(line if rank() == 0 else f"[rank {rank()}] {line}", file=sys.stderr)
    sys.exit(code)
