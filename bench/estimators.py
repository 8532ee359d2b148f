"""What the cheaper hypergradient estimators give up (``python -m bench estimators DOMAIN TASK``).

The full estimator is the central difference on the whole level I batch (variant ``fd`` of
bench/workload.py); the others are the variants there (``fd-forward``, ``fd-1/N``, ``jvp``
and ``jvp-1/N``). ``jvp`` on the whole batch is the exact directional derivative, so its row
says how far the full central difference itself is from the derivative it estimates. On real
batches of a task at its ``cpu`` preset:

1. **Agreement, same u.** One run of ``steps`` global steps with the full estimator; at every
   step each other estimator is handed the same problem (θ, batches, random draws, u).
   Reported: mean and lowest cosine of its ∂L_val/∂α to the full one and to the exact one
   (``jvp``), and the mean squared difference to the full one ("added variance").
2. **The noise that is there anyway.** At every step the full estimator is also evaluated
   with u from ``val_batches`` other validation batches; the spread of those estimates (their
   sample variance) is what the choice of validation batch already puts into the full
   estimate. ``added / val spread`` says how much an estimator adds relative to it.
3. **Trajectories and cost.** A run of ``steps`` steps with each estimator from the same seed,
   and one of plain continued pretraining (level I only): the largest |λ − λ_full| over the
   run and at its end, and the median step time over plain's.

Everything runs in this one process, the runs one after the other.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.workload import FULL, SETTINGS
from tapweight.errors import TapweightError
from tapweight.job import runner
from tapweight.job.seed import build_engine, build_task, objective_names
from tapweight.method.batches import BatchStream, head_of_batch, to_device
from tapweight.method.hypergrad import Hypergradient, softmax_vjp
from tapweight.method.metrics import task_loss
from tapweight.method.models import frozen_running_stats

CHEAP = ("fd-forward", "fd-1/4", "fd-1/8", "jvp", "jvp-1/4", "jvp-1/8", "jvp-1/16")


def _estimator(engine, settings: dict) -> Hypergradient:
    r = dataclasses.replace(engine.cfg.reweight, **settings)
    return Hypergradient(r.hypergrad, r.scale, r.fd_radius, r.fd_scheme, r.iterations, r.neumann_alpha,
                         r.curvature_iterations, r.cg_tol)


def _with_fraction(engine, problem, fraction: float):
    """``problem`` with each step's directional derivative on the head of its level I batches."""
    steps = [dataclasses.replace(s, losses=functools.partial(
        engine.losses, [(head_of_batch(b, fraction), seed) for b, seed in s.losses.args[0]]))
        for s in problem.steps]
    return dataclasses.replace(problem, steps=steps)


class Recorder:
    """Stands in for the engine's hypergradient: returns the full estimate (so the run follows
    it) and records how every cheaper estimate, and the full one under other validation
    batches, compare with it."""

    needs_hessians = False

    def __init__(self, engine, names: list[str], val_stream: BatchStream, val_batches: int):
        self.engine, self.full = engine, engine.hypergrad
        self.cheap = {name: (_estimator(engine, {**FULL, **SETTINGS[name]}),
                             SETTINGS[name].get("hyper_fraction", 1.0)) for name in names}
        self.val_stream, self.val_batches = val_stream, val_batches
        self.rows: list[dict] = []

    def _alpha(self, g: torch.Tensor) -> torch.Tensor:
        return softmax_vjp(self.engine.lam, g.cpu().double())

    def _u(self):
        """u = ∇_w L_val(w') on the next of the extra validation batches."""
        engine = self.engine
        x, y = to_device(next(self.val_stream), engine.device)
        with frozen_running_stats(engine.w):
            loss = task_loss(engine.loss_kind, engine.w(x), y)
        grads = torch.autograd.grad(loss, engine.w_params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(engine.w_params, grads)]

    def __call__(self, problem, hvps=None):
        full = self.full(problem, hvps)
        a_full = self._alpha(full)
        alphas = {name: self._alpha(estimator(_with_fraction(self.engine, problem, fraction), hvps))
                  for name, (estimator, fraction) in self.cheap.items()}
        row = {}
        for name, a in alphas.items():
            row[name] = {"cosine": float(torch.nn.functional.cosine_similarity(a, a_full, 0)),
                         "cosine_exact": float(torch.nn.functional.cosine_similarity(a, alphas["jvp"], 0)),
                         "sq_error": float((a - a_full).pow(2).sum())}
        row["fd"] = {"cosine_exact": float(torch.nn.functional.cosine_similarity(a_full, alphas["jvp"], 0))}
        others = torch.stack([self._alpha(self.full(dataclasses.replace(problem, u=self._u()), hvps))
                              for _ in range(self.val_batches)])
        row["val_spread"] = float(others.var(0, unbiased=True).sum())
        self.rows.append(row)
        return full


def build(job, cfg, table, device):
    task = build_task(job, cfg, table)
    return task.data, build_engine(job, cfg, task.data, task.backbone, task.make_head(), device)


def _config(job, variant: str):
    cfg = dataclasses.replace(job.cfg, method="uniform" if variant == "plain" else "tapweight")
    cfg.reweight = dataclasses.replace(cfg.reweight, **{**FULL, **SETTINGS.get(variant, {})})
    return cfg


def agreement(job, table, device, steps: int, val_batches: int) -> tuple[list[dict], bool]:
    """Part 1 and 2 of the module docstring: one record per global step, and whether every
    validation batch is the whole validation split (then the records' spread is rounding)."""
    cfg = _config(job, "fd")
    data, engine = build(job, cfg, table, device)
    engine.cfg.reweight.fd_scheme = "forward"  # record level I's own L(θ), for fd-forward
    val_stream = BatchStream(data.val, cfg.reweight.batch_size, data.task_collate, cfg.seed + 99)
    recorder = Recorder(engine, list(CHEAP), val_stream, val_batches)
    engine.hypergrad = recorder
    for _ in range(steps):
        engine.step()
    return recorder.rows, val_stream.batch_size >= len(data.val)


def trajectory(job, table, device, variant: str, steps: int) -> dict:
    """λ after every step and the step times of one run of ``variant``."""
    _, engine = build(job, _config(job, variant), table, device)
    lam, times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
        lam.append(engine.lam.tolist())
    return {"lambda": lam, "median_s": statistics.median(times)}


def run(domain: str, task: str, data: str, steps: int, val_batches: int, sets: list[str],
        device: torch.device) -> dict:
    job = runner.resolve(domain, task, "cpu", options={"data": data}, sets=sets)
    table = job.registry.get("datasets", job.task.dataset, domain).load(job.cfg)
    rows, one_batch = agreement(job, table, device, steps, val_batches)
    runs = {v: trajectory(job, table, device, v, steps) for v in ("plain", "fd", *CHEAP)}
    full = np.array(runs["fd"]["lambda"])
    # a split that is one batch: every "other" validation batch holds the same examples
    spread = None if one_batch else float(np.mean([r["val_spread"] for r in rows]))
    result = {"domain": domain, "task": task, "steps": steps, "val_batches": val_batches,
              "objectives": objective_names(job), "val_spread": spread, "estimators": {}}
    for name in ("fd", *CHEAP):
        lam = np.array(runs[name]["lambda"])
        entry = {"step_ratio": runs[name]["median_s"] / runs["plain"]["median_s"],
                 "lambda_max_diff": float(np.abs(lam - full).max()),
                 "lambda_final_diff": float(np.abs(lam[-1] - full[-1]).max()),
                 "final_lambda": lam[-1].tolist()}
        exact = [r[name]["cosine_exact"] for r in rows]
        entry.update(mean_cosine_exact=float(np.mean(exact)), min_cosine_exact=float(np.min(exact)))
        if name != "fd":
            cosines = [r[name]["cosine"] for r in rows]
            added = float(np.mean([r[name]["sq_error"] for r in rows]))
            entry.update(mean_cosine=float(np.mean(cosines)), min_cosine=float(np.min(cosines)),
                         added_variance=added, added_over_val_spread=added / spread if spread else None)
        result["estimators"][name] = entry
    result["plain_median_s"] = runs["plain"]["median_s"]
    return result


def step_costs(measured: dict) -> dict[str, float]:
    """Step time × plain per variant, from a ``bench step --json`` file (or a ``bench gpu`` one:
    its bf16 paper-shape table), measured with the machine to itself."""
    variants = measured.get("variants") or measured.get("step_bf16", {}).get("variants")
    if not variants:
        raise TapweightError("--costs: not a `bench step` or `bench gpu` JSON file (no variants)")
    return {name: v["ratio"] for name, v in variants.items()}


def with_costs(result: dict, costs: dict[str, float], source: str) -> dict:
    """``result`` with each estimator's step cost taken from ``costs``; estimators that were not
    timed there are left out (the study's own timings ran beside other work)."""
    estimators = {name: {**e, "step_ratio": costs[name]} for name, e in result["estimators"].items()
                  if name in costs}
    return {**result, "estimators": estimators, "costs_from": source}


def table(result: dict) -> str:
    spread = result["val_spread"]
    said = (f"validation-batch spread of the full estimate {spread:.3e} ({result['val_batches']} batches a step)"
            if spread is not None else "no validation-batch spread: the validation split is a single batch")
    lines = [f"{result['domain']}/{result['task']}, {result['steps']} steps; {said}"
             + (f"; step costs from {result['costs_from']}" if "costs_from" in result else ""),
             "| estimator | step × plain | cosine to fd: mean | min | cosine to exact: mean | min "
             "| added variance / val spread | max abs λ diff (run) | at the end |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in result["estimators"].items():
        ratio = e.get("added_over_val_spread")
        lines.append(f"| {name} | {e['step_ratio']:.2f} | {e.get('mean_cosine', 1.0):.4f} | "
                     f"{e.get('min_cosine', 1.0):.4f} | {e['mean_cosine_exact']:.4f} | {e['min_cosine_exact']:.4f} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}'} | "
                     f"{e['lambda_max_diff']:.4f} | {e['lambda_final_diff']:.4f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """Cost (step time × plain) against accuracy (mean cosine to the exact derivative), per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, result in enumerate(results):
        points = [(e["step_ratio"], e["mean_cosine_exact"], name) for name, e in result["estimators"].items()]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=f"C{i}",
                   label=f"{result['domain']}/{result['task']}")
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("global step time × plain continued pretraining")
    ax.set_ylabel("mean cosine of ∂L_val/∂α to the exact one (jvp)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
