"""The commands that read: ``list``, ``plugins``, ``show``, ``predict`` and ``export``.

``list``, ``plugins`` and ``show`` (`show`) import neither torch nor
pandas; ``predict`` and ``export`` load the run's domain and model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from tapweight.commands.console import console
from tapweight.config import option_rows
from tapweight.errors import TapweightError
from tapweight.plugin import manager as plugin_manager

LISTABLE = ("domains", "tasks", "objectives", "backbones", "heads", "datasets", "loggers", "methods", "estimators",
            "options")


def list_command(what: Annotated[str, typer.Argument(help=" | ".join(LISTABLE))] = "tasks",
                 domain: Annotated[Optional[str], typer.Argument(help="options: the domain's too "
                                                                      "(e.g. nlp)")] = None):
    """List what the loaded plugins provide, or the config keys (`list options [DOMAIN]`)."""
    if what not in LISTABLE:
        raise TapweightError(f"cannot list '{what}'; choose one of {', '.join(LISTABLE)}")
    if domain is not None and what != "options":
        raise TapweightError(f"`tapweight list {what}` takes no domain; `tapweight list options {domain}` does")
    registry = plugin_manager.build_registry()
    if what == "options":
        return _list_options(registry, domain)
    table = RichTable(show_header=True)
    table.add_column(what[:-1])
    table.add_column("plugin")
    table.add_column("description")
    for name in registry.names(what):
        spec = registry.tables[what][name]  # a method as --method names it: single:<objective>
        table.add_row(*map(escape, (getattr(spec, "usage", name), registry.owners[(what, name)],
                                    getattr(spec, "description", ""))))
    if what == "domains":  # escaped: rich would read the fix's [nlp] as markup and drop it
        for problem in registry.problems:
            table.add_row(*map(escape, (problem.plugin, "unavailable",
                                        f"{problem.message}. {problem.fix}".strip())))
    console().print(table)


def _list_options(registry, domain: str | None) -> None:
    """Every config key with its default and meaning; a domain's own keys after the core's."""
    options = registry.require_domain(domain).options if domain else None
    table = RichTable(show_header=True)
    for column in ("key", "default", "description"):
        table.add_column(column)
    for row in option_rows(domain or "", options):
        table.add_row(*map(escape, row))
    console().print(table)
    if not domain:
        console().print("a domain's own keys: tapweight list options DOMAIN", markup=False, highlight=False)


def plugins_command():
    """Print the plugins as JSON: name, version, hooks, what they provide, problems."""
    print(json.dumps(plugin_manager.plugin_report(), indent=2))


def show(run_dir: Annotated[Path, typer.Argument(help="a run folder")],
         full_config: Annotated[bool, typer.Option("--config", help="also print every key of config.yaml")] = False):
    """Summarise a run folder: metrics, final λ, diagnostics, then the values the run used."""
    from tapweight.commands.show import show as show_run

    show_run(run_dir, full_config)


def predict(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    data: Annotated[str, typer.Option(help="file of new inputs (SMILES CSV/.smi, texts, feature CSV: "
                                           "the domain's)")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="CSV to write (default <data>_preds.csv "
                                                                   "beside the data file)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="use this seed's model (default: the mean of "
                                                     "every seed's)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    smiles_column: Annotated[Optional[str], typer.Option(help="the file's SMILES column (mol; default: "
                                                               "the run's, or 'smiles')")] = None,
    text_column: Annotated[Optional[str], typer.Option(help="the file's text column (nlp; default: the "
                                                             "run's, or 'text')")] = None,
):
    """Score new inputs with the run's final fine-tuned model(s); invalid rows are reported."""
    from tapweight.commands.predict import predict as predict_inputs
    from tapweight.job.report import write_csv

    columns = {k: v for k, v in (("smiles_column", smiles_column), ("text_column", text_column)) if v}
    frame = predict_inputs(run_dir, data, seed, device, columns)
    target = out_file or Path(data).parent / f"{Path(data).name.split('.')[0]}_preds.csv"
    write_csv(frame, target)
    console().print(f"{len(frame)} rows -> {target}", soft_wrap=True, markup=False)


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
        console().print(str(path), soft_wrap=True, markup=False)
