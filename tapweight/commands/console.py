"""What the commands share: consoles that do not wrap into files, option parsing, the summary table."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from tapweight.errors import TapweightError
from tapweight.job.log import LibraryErrors, OursOrWarnings
from tapweight.plugin import manager as plugin_manager


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that, when the stream is not a terminal (a file,
    a pipe, a scheduler's log), neither wraps nor cuts lines: paths stay whole."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 100_000)


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record comes (as rich's
    console does), not on the stream of the moment it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def stderr_handler() -> logging.Handler:
    """A handler of our INFO lines and everyone's warnings on stderr: through rich on a
    terminal, as plain unwrapped lines (``INFO tapweight.job.runner: ...``) into a file, a
    pipe or a notebook. Marked ``tapweight``: a run holds its INFO lines back until training
    starts and shows each line once (`tapweight.job.log.RunLog`)."""
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=console(stderr=True), show_path=False, markup=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OursOrWarnings())
    handler.addFilter(LibraryErrors(handler))
    handler.tapweight = True
    return handler


@contextmanager
def console_logging() -> Iterator[None]:
    """For the Python API: `stderr_handler` on the root logger while the block runs,
    unless logging is configured already (the root logger has a handler: the program's
    choice stands). Without it the run's warnings would reach only ``log.txt``: the run's
    own handlers keep Python's last-resort stderr output from firing."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = stderr_handler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def rank() -> int:
    """This process's rank under ``torchrun`` (0 when not launched so), from the environment
    torchrun sets: a command that only prints need not import torch to know it."""
    return int(os.environ.get("RANK", "0"))


def is_quiet(flag: bool) -> bool:
    """``--quiet``, implied when stderr is not a terminal: a progress bar redrawn into a log
    file is noise, a log line every ``log_every`` steps is not."""
    return flag or not sys.stderr.isatty()


def seeds_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TapweightError(f"--seeds takes integers separated by commas, got '{text}'") from None


def names_list(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise TapweightError(f"{what} takes names separated by commas, got '{text}'")
    return items


def model_options(domain: str, model: str | None, registry=None) -> dict:
    """The config keys ``--model`` sets in ``domain`` (none without ``--model``); the plugins
    are loaded for it unless ``registry`` is given."""
    if model is None:
        return {}
    options = (registry or plugin_manager.build_registry()).require_domain(domain).options
    if "model" not in {f.name for f in dataclasses.fields(options)}:
        raise TapweightError(f"domain '{domain}' has no --model option; use --init for weights")
    return {f"{domain}.model": model}


def print_encoder(summary: dict) -> None:
    if rank() == 0:
        print(f"encoder: {summary['encoder']}")  # plain: a path rich would wrap


def print_summary(summary: dict) -> None:
    """The per-seed table, mean ± std over several seeds, and where the run folder is (rank
    0 only: the other ranks hold the same)."""
    from tapweight.job.summary import mean_pm_std, number

    if rank() != 0:
        return
    name = summary.get("name") or summary["task"]
    table = RichTable(title=escape(f"{summary['domain']}/{name} — {summary['method']}"))
    table.add_column("seed")
    table.add_column(f"val {summary['metric']}")
    table.add_column(f"test {summary['metric']}")
    for seed, result in summary["seeds"].items():
        table.add_row(str(seed), number(result.get("val")), number(result.get("test")))
    if len(summary["seeds"]) > 1:
        table.add_row("mean ± std", mean_pm_std(summary, "val"), mean_pm_std(summary, "test"))
    out = console()
    out.print(table)
    if summary.get("folder"):
        out.print(f"run folder: {summary['folder']}", markup=False, highlight=False)
