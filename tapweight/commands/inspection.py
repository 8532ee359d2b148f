"""The commands that read: ``list``, ``plugins``, ``show``, ``predict`` and ``export``.

``list``, ``plugins`` and ``show`` import neither torch nor pandas' heavy paths until they need
them; ``predict`` and ``export`` load the run's domain and model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from tapweight.commands.console import console, print_summary
from tapweight.errors import TapweightError
from tapweight.job.folder import saved_task
from tapweight.plugin import manager as plugin_manager

LISTABLE = ("domains", "tasks", "objectives", "backbones", "heads", "datasets", "loggers", "methods")


def list_command(what: Annotated[str, typer.Argument(help=" | ".join(LISTABLE))] = "tasks"):
    """List what the loaded plugins provide."""
    if what not in LISTABLE:
        raise TapweightError(f"cannot list '{what}'; choose one of {', '.join(LISTABLE)}")
    registry = plugin_manager.build_registry()
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


def plugins_command():
    """Print the plugins as JSON: name, version, hooks, what they provide, problems."""
    print(json.dumps(plugin_manager.plugin_report(), indent=2))


def show(run_dir: Annotated[Path, typer.Argument(help="a run folder")]):
    """Summarise a run folder: config, final λ, metrics."""
    metrics = run_dir / "metrics.json"
    saved_task(run_dir)
    out = console()
    out.print(f"[bold]{escape(str(run_dir))}[/bold]")
    out.print(f"config.yaml:\n{(run_dir / 'config.yaml').read_text().rstrip()}", markup=False,
                  highlight=False)
    for csv in sorted(run_dir.glob("seed*/weights.csv")):
        from tapweight.job.report import overconfidence_line, signal_line

        step, lam = _last_weights(csv)
        out.print(f"{csv.parent.name}: step {step}, λ {lam}", markup=False, highlight=False)
        for line in (signal_line(csv.parent), overconfidence_line(csv.parent)):
            if line:
                out.print(f"{csv.parent.name}: {line}", markup=False, highlight=False)
    if metrics.is_file():
        print_summary(_read_summary(metrics))
    else:
        out.print("not finished: no metrics.json yet (continue it with `tapweight resume`)",
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
