"""The hypergradient's estimators against the exact one, on real batches of a task
(``python -m bench estimators DOMAIN TASK``): the default's accuracy criterion, measured.

The criterion (tapweight/method/estimators.py): an estimator's mean squared deviation from
the exact float32 directional derivative (forward-mode ``jvp``, TF32 off), as a fraction of
the variance the choice of validation batch already puts into the hypergradient. ``auto``
may pick only estimators at ≤ 5 % of it. On a task at its ``cpu`` preset (``--set`` for the
rest, e.g. ``amp=bf16`` or ``pretrain.batch_size=1024``):

1. **Deviation, same u.** One run of ``steps`` global steps following the exact estimate; at
   every step each studied estimator is handed the same problem (θ, batches, random draws,
   u): its squared distance to the exact ∂L_val/∂α and its cosine to it.
2. **Validation-batch variance.** At every step the exact estimate is also evaluated with u
   from ``val_batches`` other validation batches; their sample variance, summed over the K
   coordinates, is the noise the hypergradient has anyway.

Reported per estimator: mean deviation / mean variance, mean and lowest cosine; and which
estimator ``auto`` picks for this configuration. Studied: the variants of bench/workload.py
(one per registered estimator, and slices of the level I batch), ``NAME@R`` for variant NAME
at ``fd_radius`` R, ``NAME:amp`` for its forwards evaluated as level I ran (the run's
autocast: e.g. ``jvp:amp`` under ``amp=bf16``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from bench.workload import SETTINGS
from tapweight.errors import TapweightError
from tapweight.job import runner
from tapweight.job.seed import build_engine, build_task, objective_names
from tapweight.method import estimators
from tapweight.method.batches import BatchStream, head_of_batch, to_device
from tapweight.method.hypergrad import Hypergradient, softmax_vjp
from tapweight.method.metrics import task_loss
from tapweight.method.models import frozen_running_stats

#: what is studied unless --estimators says otherwise
STUDY = ("fd-forward", "fd", "jvp", "fd-forward@0.01", "fd-forward@0.1", "fd-1/4", "jvp-1/4", "jvp-1/8")
CRITERION = 0.05  # the default's largest deviation / validation-batch variance
AMP = ":amp"  # a studied name's suffix: its forwards at level I's precision (the run's autocast)


def settings(name: str) -> dict:
    """The reweight keys of a studied estimator: a bench variant, ``@R`` its radius (``:amp``
    is read by `run`)."""
    variant, _, radius = name.removesuffix(AMP).partition("@")
    method = SETTINGS.get(variant, {}).get("hypergrad")
    if method is None or estimators.classes()[method].needs_hessians:
        raise TapweightError(f"--estimators: '{name}' is not a directional estimator's variant; "
                             f"give names like {', '.join(STUDY)}")
    try:
        return {**SETTINGS[variant], **({"fd_radius": float(radius)} if radius else {})}
    except ValueError:
        raise TapweightError(f"--estimators: '{name}': the radius after @ must be a number") from None


def exact(cfg) -> Hypergradient:
    """The reference: forward-mode jvp in float32 without TF32."""
    hypergrad = estimators.build(dataclasses.replace(cfg, reweight=dataclasses.replace(cfg.reweight,
                                                                                        hypergrad="jvp")))
    hypergrad.estimator.precision = "float32"
    return hypergrad


def _with_fraction(engine, problem, fraction: float):
    """``problem`` with each step's directional derivative on the head of its level I batches."""
    def cut(one):
        batches = [(head_of_batch(b, fraction), seed) for b, seed in one.batches]
        return dataclasses.replace(one, batches=batches, evaluate=functools.partial(engine.losses, batches))

    steps = [dataclasses.replace(s, pretrain=cut(s.pretrain)) for s in problem.steps]
    return dataclasses.replace(problem, steps=steps)


class Recorder:
    """Stands in for the engine's hypergradient: returns the exact estimate (so the run follows
    it) and records each studied estimate's deviation from it, and the exact one's spread
    under other validation batches."""

    needs_hessians = False

    def __init__(self, engine, studied: dict[str, Hypergradient], val_stream: BatchStream, val_batches: int):
        self.engine, self.exact, self.studied = engine, exact(engine.cfg), studied
        self.val_stream, self.val_batches = val_stream, val_batches
        self.rows: list[dict] = []

    def _alpha(self, g: torch.Tensor) -> torch.Tensor:
        return softmax_vjp(self.engine.lam, g.cpu().double())

    def _u(self):
        """u = ∇_w L_val(w') on the next of the extra validation batches."""
        engine = self.engine
        x, y = to_device(next(self.val_stream), engine.device)
        with frozen_running_stats(engine.w), engine._autocast():
            loss = task_loss(engine.loss_kind, engine.w(x), y)
        grads = torch.autograd.grad(loss, engine.w_params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(engine.w_params, grads)]

    def __call__(self, problem, hvps=None):
        reference = self.exact(problem, hvps)
        a_exact = self._alpha(reference)
        row = {}
        for name, hypergrad in self.studied.items():
            fraction = hypergrad.estimator.settings.hyper_fraction
            a = self._alpha(hypergrad(problem if fraction == 1 else _with_fraction(self.engine, problem, fraction),
                                      hvps))
            row[name] = {"cosine": float(torch.nn.functional.cosine_similarity(a, a_exact, 0)),
                         "sq_deviation": float((a - a_exact).pow(2).sum())}
        others = torch.stack([self._alpha(self.exact(dataclasses.replace(problem, u=self._u()), hvps))
                              for _ in range(self.val_batches)])
        row["val_variance"] = float(others.var(0, unbiased=True).sum())
        self.rows.append(row)
        return reference


def build(job, cfg, table, device):
    task = build_task(job, cfg, table)
    return task.data, build_engine(job, cfg, task.data, task.backbone, task.make_head(), device)


def run(domain: str, task: str, data: str, steps: int, val_batches: int, sets: list[str],
        device: torch.device, names: tuple[str, ...] = STUDY) -> dict:
    keys = {name: settings(name) for name in names}  # a bad name fails before any work
    job = runner.resolve(domain, task, "cpu", options={"data": data}, sets=sets)
    table = job.registry.get("datasets", job.task.dataset, domain).load(job.cfg)
    cfg = dataclasses.replace(job.cfg, method="tapweight")
    variants = {name: dataclasses.replace(cfg, reweight=dataclasses.replace(cfg.reweight, **k))
                for name, k in keys.items()}
    known = estimators.classes()
    refused = {name: why for name, c in variants.items() if (why := known[c.reweight.hypergrad].refuses(c))}
    data_, engine = build(job, cfg, table, device)
    val_stream = BatchStream(data_.val, cfg.reweight.batch_size, data_.task_collate, cfg.seed + 99)
    studied = {name: estimators.build(c) for name, c in variants.items() if name not in refused}
    for name, hypergrad in studied.items():
        if name.endswith(AMP):
            hypergrad.estimator.precision = "level_one"
    recorder = Recorder(engine, studied, val_stream, val_batches)
    engine.hypergrad = recorder
    for _ in range(steps):
        engine.step()
    rows = recorder.rows
    # a split that is one batch: every "other" validation batch holds the same examples
    variance = None if val_stream.batch_size >= len(data_.val) else float(np.mean([r["val_variance"] for r in rows]))
    result = {"domain": domain, "task": task, "steps": steps, "val_batches": val_batches, "sets": list(sets),
              "amp": cfg.amp, "level_one_batch": cfg.pretrain.batch_size, "objectives": objective_names(job),
              "val_variance": variance, "default": estimators.choose(cfg, device)[0], "criterion": CRITERION,
              "refused": refused, "estimators": {}}
    for name in studied:
        cosines = [r[name]["cosine"] for r in rows]
        deviation = float(np.mean([r[name]["sq_deviation"] for r in rows]))
        result["estimators"][name] = {
            "sq_deviation": deviation, "deviation_over_variance": deviation / variance if variance else None,
            "mean_cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines))}
    return result


def step_costs(measured: dict) -> dict[str, float]:
    """Step time × plain per variant, from a ``bench step --json`` file (or a ``bench gpu`` one:
    its bf16 paper-shape table), measured with the machine to itself."""
    variants = measured.get("variants") or measured.get("step_bf16", {}).get("variants")
    if not variants:
        raise TapweightError("--costs: not a `bench step` or `bench gpu` JSON file (no variants)")
    return {name: v["ratio"] for name, v in variants.items()}


def with_costs(result: dict, costs: dict[str, float], source: str) -> dict:
    """``result`` with each estimator's step cost from ``costs`` where that file timed it."""
    rows = {name: {**e, "step_ratio": costs[name.partition("@")[0]]} if name.partition("@")[0] in costs else e
            for name, e in result["estimators"].items()}
    return {**result, "estimators": rows, "costs_from": source}


def table(result: dict) -> str:
    variance = result["val_variance"]
    said = (f"validation-batch variance of the exact estimate {variance:.3e} ({result['val_batches']} batches a step)"
            if variance is not None else "no validation-batch variance: the validation split is a single batch")
    sets = f" ({' '.join(result['sets'])})" if result.get("sets") else ""
    lines = [f"{result['domain']}/{result['task']}{sets}, {result['steps']} steps; {said}; auto picks "
             f"'{result['default']}'" + (f"; step costs from {result['costs_from']}" if "costs_from" in result else ""),
             "| estimator | step × plain | deviation / val variance | cosine to exact: mean | min |",
             "|---|---:|---:|---:|---:|"]
    for name, e in result["estimators"].items():
        ratio, cost = e["deviation_over_variance"], e.get("step_ratio")
        mark = " (auto)" if name == result["default"] else ""
        lines.append(f"| {name}{mark} | {'-' if cost is None else f'{cost:.2f}'} | "
                     f"{'-' if ratio is None else f'{ratio:.4f}'} | {e['mean_cosine']:.4f} | {e['min_cosine']:.4f} |")
    lines += [f"refused: {name}: {why}" for name, why in result["refused"].items()]
    auto = result["estimators"].get(result["default"], {}).get("deviation_over_variance")
    if auto is not None:
        lines.append(f"criterion (auto ≤ {result['criterion']:.0%} of the variance): "
                     f"{'met' if auto <= result['criterion'] else 'MISSED'} ({auto:.2%})")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """Cost (step time × plain, where known) against deviation / validation-batch variance, per study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, result in enumerate(results):
        points = [(e["step_ratio"], e["deviation_over_variance"], name) for name, e in result["estimators"].items()
                  if e.get("step_ratio") is not None and e["deviation_over_variance"] is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=f"C{i}",
                   label=f"{result['domain']}/{result['task']} {' '.join(result.get('sets', []))}".strip())
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(CRITERION, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("global step time × plain continued pretraining")
    ax.set_ylabel("deviation from exact / validation-batch variance")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
