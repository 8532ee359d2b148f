"""A hypergradient every k global steps (``reweight.every``) against every step
(``python -m bench every DOMAIN TASK``): what λ gives up, and what the step saves.

For each seed, one engine per k of ``--every`` (the task's ``cpu`` preset and ``--set``
overrides, the method ``tapweight``) and one plain engine (level I only, uniform λ: the
baseline) run ``steps`` global steps side by side, one step of each in turn, the order
rotated every step so that no engine always follows the same one. Reported:

- **λ**: per k, the largest distance over steps and objectives between the seed-mean
  trajectories of k and of k = 1, against λ's own seed-to-seed spread (the standard deviation
  over seeds of k = 1's λ, its largest and its mean over steps and objectives). A distance
  inside the spread is a trajectory the seeds cannot tell apart.
- **Cost**: each k's mean step time over all steps and seeds × the plain step's (a mean,
  not a median: k − 1 of every k steps skip level III).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
import torch

from bench.estimators import build
from tapweight.job import runner
from tapweight.job.seed import objective_names


def run(domain: str, task: str, data: str, steps: int, seeds: list[int], every: list[int], sets: list[str],
        device: torch.device) -> dict:
    job = runner.resolve(domain, task, "cpu", options={"data": data}, sets=sets)
    table = job.registry.get("datasets", job.task.dataset, domain).load(job.cfg)
    lam: dict[int, list] = {k: [] for k in every}  # k -> per seed [steps, K]
    times: dict[str, list[float]] = {"plain": [], **{f"every-{k}": [] for k in every}}
    for seed in seeds:
        cfg = dataclasses.replace(job.cfg, method="tapweight", seed=seed)
        engines = {f"every-{k}": build(job, dataclasses.replace(
            cfg, reweight=dataclasses.replace(cfg.reweight, every=k)), table, device)[1] for k in every}
        engines["plain"] = build(job, dataclasses.replace(cfg, method="uniform"), table, device)[1]
        trajectory = {k: [] for k in every}
        order = list(engines)
        for s in range(steps):
            for name in order[s % len(order):] + order[:s % len(order)]:
                start = time.perf_counter()
                engines[name].step()
                times[name].append(time.perf_counter() - start)
            for k in every:
                trajectory[k].append(engines[f"every-{k}"].lam.tolist())
        for k in every:
            lam[k].append(trajectory[k])
    return {"command": "every", "domain": domain, "task": task, "sets": sets, "steps": steps, "seeds": seeds,
            "every": every, "objectives": objective_names(job), "lambda": {str(k): v for k, v in lam.items()},
            "step_s": times}


def summary(result: dict) -> dict:
    """λ's distance to k = 1 against its seed-to-seed spread, and each k's cost × plain."""
    lam = {int(k): np.array(v) for k, v in result["lambda"].items()}  # [seeds, steps, K]
    spread = lam[1].std(0, ddof=1)  # [steps, K]
    plain = statistics.mean(result["step_s"]["plain"])
    rows = {}
    for k, values in lam.items():
        distance = np.abs(values.mean(0) - lam[1].mean(0))
        rows[k] = {"max_distance": float(distance.max()), "final_distance": float(distance[-1].max()),
                   "cost": statistics.mean(result["step_s"][f"every-{k}"]) / plain}
    return {"spread_max": float(spread.max()), "spread_mean": float(spread.mean()),
            "spread_final": float(spread[-1].max()), "rows": rows}


def table(result: dict) -> str:
    s = summary(result)
    lines = [f"{result['domain']}/{result['task']} {' '.join(result['sets'])}, {result['steps']} steps, "
             f"seeds {result['seeds']}; λ's seed-to-seed spread (std over seeds, every step): "
             f"max {s['spread_max']:.4f}, mean {s['spread_mean']:.4f}, at the last step {s['spread_final']:.4f}",
             "| k | step × plain (mean) | max \\|λ̄_k − λ̄_1\\| over steps | at the last step |",
             "|---:|---:|---:|---:|"]
    for k, row in s["rows"].items():
        lines.append(f"| {k} | {row['cost']:.2f} | {row['max_distance']:.4f} | {row['final_distance']:.4f} |")
    return "\n".join(lines)
