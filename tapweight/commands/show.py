"""``tapweight show RUN``: the result first, then the values the run used, the full config on request.

It reads the run folder with the standard library, rich and the plugins' registrations
(``plugin.py`` modules import nothing heavy), so it answers in well under a second: no
torch, no pandas (``tests/test_watch.py`` checks it, ``python -m bench startup`` times it).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from tapweight.commands.console import console, print_summary
from tapweight.config import RunConfig, build_config, layer_from_file
from tapweight.errors import TapweightError
from tapweight.job import resolved
from tapweight.job.folder import saved_task
from tapweight.job.summary import last_weights, overconfidence_line, signal_line
from tapweight.plugin import manager as plugin_manager


def show(run_dir: Path, full_config: bool = False) -> None:
    """Print the metrics table, each seed's final λ and diagnostics, the values used and
    (``full_config``) ``config.yaml``."""
    domain, _ = saved_task(run_dir)
    out = console()
    plain = {"markup": False, "highlight": False}
    out.print(f"[bold]{escape(str(run_dir))}[/bold]")
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        print_summary(read_summary(metrics))
    else:
        out.print("not finished: no metrics.json yet (continue it with `tapweight resume`)", **plain)
    for csv in sorted(run_dir.glob("seed*/weights.csv")):
        step, lam = last_weights(csv)
        out.print(f"{csv.parent.name}: step {step}, λ {lam}", **plain)
        said = overconfidence_line(csv.parent)
        for line in (signal_line(csv.parent), said[1] if said else None):
            if line:
                out.print(f"{csv.parent.name}: {line}", **plain)
    out.print("used:", **plain)
    for line in used_lines(run_dir, domain) + estimator_lines(run_dir):
        out.print(f"  {line}", **plain)
    if full_config:
        out.print(f"config.yaml:\n{(run_dir / 'config.yaml').read_text().rstrip()}", **plain)
    else:
        out.print(f"every key: tapweight show {run_dir} --config", **plain)


def used_lines(run_dir: Path, domain: str) -> list[str]:
    """The values the run used, the domain's defaults filled in where the config left them."""
    registry = plugin_manager.build_registry()
    try:
        dom = registry.require_domain(domain)
    except TapweightError as err:  # the plugin that made the run is not installed here
        return [f"the domain's defaults are unknown here ({err}); config.yaml holds the keys given"]
    cfg = build_config(dom.options, [("config.yaml", layer_from_file(str(run_dir / "config.yaml"), domain))],
                       check=False)

    def default(given, value: str) -> str:
        return value if given else f"{value} (the domain's default)"

    objectives = resolved.objective_names(cfg, registry, dom)
    pretrained = any(run_dir.glob("seed*/weights.csv"))  # a method that pretrains writes λ per step
    trained = (default(cfg.objectives or ":" in cfg.method, ", ".join(objectives)) if pretrained
               else "none trained (no continued pretraining: fine-tune only)")
    lines = [f"method: {cfg.method}, {cfg.steps} steps, seeds {', '.join(map(str, cfg.seeds or [cfg.seed]))}",
             f"objectives: {trained}" + (f", starting weights {cfg.weights}" if cfg.weights else ""),
             f"backbone: {default(cfg.backbone, resolved.backbone_name(cfg, dom))}, from "
             f"{resolved.encoder_source(cfg)}",
             f"head: {default(cfg.head, resolved.head_name(cfg, dom))}",
             f"data: {cfg.data or 'the task default'}; corpus: {cfg.corpus or 'the training inputs (TAPT)'}"]
    lines += [_level(name, cfg) for name in ("pretrain", "finetune", "reweight", "final")]
    lines += preset_lines(run_dir)
    if cfg.options is not None:
        options = ", ".join(f"{k}={v}" for k, v in vars(cfg.options).items())
        lines.append(f"{domain} options: {options}")
    return lines


def estimator_lines(run_dir: Path) -> list[str]:
    """Which estimator computed the hypergradient and why: metrics.json's, or while the run is
    going, the line log.txt has of it (none for a method that reads no hypergradient)."""
    metrics, run_log = run_dir / "metrics.json", run_dir / "log.txt"
    if metrics.is_file():
        chosen = read_summary(metrics).get("estimator")
        return [f"hypergradient by {chosen['name']}: {chosen['reason']}"] if chosen else []
    lines = run_log.read_text(errors="replace").splitlines() if run_log.is_file() else []
    return [line[line.index("hypergradient by "):] for line in lines if "hypergradient by " in line][-1:]


def preset_lines(run_dir: Path) -> list[str]:
    """The run log's line of what the preset set (runs logged before it was written: none)."""
    log = run_dir / "log.txt"
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [line[line.index("preset "):] for line in text.splitlines() if " set: " in line and "preset " in line][:1]


def _level(name: str, cfg: RunConfig) -> str:
    """One level's optimizer, rate, batch and the keys that matter most to it."""
    level = getattr(cfg, name)
    extra = {"finetune": lambda: f", γ {level.gamma:g}", "reweight": lambda: f", hypergradient {level.hypergrad}",
             "final": lambda: f", {level.epochs} epochs"}.get(name, str)()
    return (f"{name}: {level.optimizer} lr {level.lr:g}, {level.scheduler} schedule, batch {level.batch_size}, "
            f"weight decay {level.weight_decay:g}{extra}")


def read_summary(path: Path) -> dict:
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
