"""Tables for the terminal and the JSON record of a benchmark, with the machine it ran on.

The performance targets are checked for the shipped default (variant ``default``):
on a CPU, global step ≤ 1.40× the plain continued-pretraining step and peak memory ≤ 1.10×;
on a GPU, step ≤ 1.45×, memory ≤ 1.05× and Betty ≥ 2.5× slower than the default.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

DEFAULT_METHOD = "default"
TARGETS = {"cpu": {"step_ratio_max": 1.40, "betty_speedup_min": None, "peak_ratio_max": 1.10},
           "cuda": {"step_ratio_max": 1.45, "betty_speedup_min": 2.5, "peak_ratio_max": 1.05}}


def machine(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "processor": platform.processor()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def targets(variants: dict, device: str = "cpu") -> dict:
    """The targets on ``device``'s kind for the default method, where its numbers exist and a
    target is set (``met`` None otherwise)."""
    bounds = TARGETS["cuda" if device.startswith("cuda") else "cpu"]
    ours, betty = variants.get(DEFAULT_METHOD, {}), variants.get("betty", {})
    speedup = None
    if "median_s" in ours and "median_s" in betty:
        speedup = betty["median_s"] / ours["median_s"]
    checks = {"step_ratio": (ours.get("ratio"), bounds["step_ratio_max"], "<="),
              "betty_speedup": (speedup, bounds["betty_speedup_min"], ">="),
              "peak_ratio": (ours.get("peak_ratio"), bounds["peak_ratio_max"], "<=")}
    out = {}
    for name, (value, bound, op) in checks.items():
        met = None if value is None or bound is None else (value <= bound if op == "<=" else value >= bound)
        out[name] = {"value": value, "target": "none" if bound is None else f"{op} {bound}", "met": met}
    return out


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def step_table(result: dict) -> str:
    head = f"{'variant':<14} {'median s':>9} {'× plain':>8} {'min s':>8} {'max s':>8} " \
           f"{'peak MiB':>9} {'× plain':>8} {'img/s (I)':>10}"
    lines = [head, "-" * len(head)]
    for name, v in result["variants"].items():
        times = v.get("times_s")
        peak = v.get("peak_bytes")
        lines.append(
            f"{name:<14} {_fmt(v.get('median_s'), '9.3f', 'skipped'):>9} {_fmt(v.get('ratio'), '8.2f'):>8} "
            f"{_fmt(min(times) if times else None, '8.3f'):>8} {_fmt(max(times) if times else None, '8.3f'):>8} "
            f"{_fmt(peak / 2**20 if peak is not None else None, '9.1f'):>9} "
            f"{_fmt(v.get('peak_ratio'), '8.2f'):>8} {_fmt(v.get('pretrain_images_per_s'), '10.1f'):>10}")
    lines += [f"{name}: {v['vs_image_plain']:.2f} × the image backbone's plain step"
              for name, v in result["variants"].items() if v.get("vs_image_plain")]
    for name, v in result["variants"].items():
        lines += [f"note ({name}): {n}" for n in v["notes"]]
    lines.append(f"targets (the shipped default, variant '{DEFAULT_METHOD}'): " + ", ".join(
        f"{k} {_fmt(t['value'], '.2f')} ({t['target']}: "
        f"{'n/a' if t['met'] is None else 'met' if t['met'] else 'MISSED'})"
        for k, t in result["targets"].items()))
    lines += phase_table(result["variants"])
    load = result["load_average"]
    lines.append(f"load average (1/5/15 min) before {_load(load['before'])}, after {_load(load['after'])}")
    return "\n".join(lines)


PHASE_COLUMNS = (("step", "step"), ("level I", "level_I"), ("level II", "level_II"),
                 ("level III", "level_III"), ("of which hypergrad", "hypergradient"))


def phase_table(variants: dict) -> list[str]:
    """Where a profiled step's time goes (``--profile``): seconds per level, and in brackets
    as a multiple of the plain step's whole step; empty when nothing was profiled."""
    rows = {name: v["phases_s"] for name, v in variants.items() if "phases_s" in v}
    if not rows:
        return []
    base = rows.get("plain", {}).get("step")
    head = f"{'levels':<10} " + " ".join(f"{title:>19}" for title, _ in PHASE_COLUMNS)
    lines = ["", head, "-" * len(head)]
    for name, phases in rows.items():
        cells = []
        for _, key in PHASE_COLUMNS:
            value = phases.get(key)
            share = f" ({value / base:4.2f}×)" if value is not None and base else ""
            cells.append(f"{_fmt(value, '.3f') + share:>19}")
        lines.append(f"{name:<10} " + " ".join(cells))
    lines.append("(mean seconds per step, the device synchronised at each level's ends; in brackets × the "
                 "plain step)")
    return lines


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def data_table(result: dict) -> str:
    head = f"{'stage':<34} {'workers':>7} {'images':>7} {'images/s':>9}"
    lines = [head, "-" * len(head)]
    for row in result["rows"]:
        lines.append(f"{row['stage']:<34} {row['workers']:>7} {row['images']:>7} {row['images_per_s']:>9.1f}")
    load = result["load_average"]
    lines.append(f"load average (1/5/15 min) before {_load(load['before'])}, after {_load(load['after'])}")
    return "\n".join(lines)


def baselines_table(result: dict) -> str:
    """Markdown: one row per baseline, test metric mean ± std, per seed, val, time."""
    metric, seeds = result["metric"], result["seeds"]
    lines = [f"{result['domain']}/{result['task']}: {result['rows']} rows from {result['data']}, "
             f"{result['split']} split {result['sizes']['train']}/{result['sizes']['val']}/"
             f"{result['sizes']['test']}, seeds {','.join(map(str, seeds))}",
             f"| baseline | test {metric} (mean ± std) | per seed | val {metric} | fit s per seed |",
             "|---|---|---|---|---|"]
    for name, r in result["baselines"].items():
        per_seed = ", ".join(f"{r['seeds'][s]['test']:.3f}" for s in seeds)
        fit = f"{r['fit_s_mean']:.1f}" if "fit_s_mean" in r else "-"
        lines.append(f"| {name} | {r['test_mean']:.3f} ± {r['test_std']:.3f} | {per_seed} | "
                     f"{r['val_mean']:.3f} ± {r['val_std']:.3f} | {fit} |")
    lines.append("featurization s: " + (", ".join(f"{k} {v:.1f}" for k, v in result["featurize_s"].items())
                                         or "none"))
    return "\n".join(lines)


def curvature_table(result: dict) -> str:
    """Markdown: each fine-tuning level's learning rate beside its stability bound."""
    lines = [f"{result['domain']}/{result['task']} {' '.join(result['sets'])}: {result['examples']} "
             f"training examples, E|f|² = {result['mean_sq_feature_norm']:.1f}, "
             f"λ_max(H) = {result['top_eigenvalue']:.1f}",
             "| level | optimizer | lr | stable below | lr / bound |", "|---|---|---|---|---|"]
    for name, v in result["levels"].items():
        bound = v["stable_lr"]
        ratio = "-" if bound is None or not np.isfinite(bound) else f"{v['lr'] / bound:.2f}"
        lines.append(f"| {name} | {v['optimizer']} (momentum {v['momentum']:g}) | {v['lr']:g} | "
                     f"{'-' if bound is None else format(bound, '.4f')} | {ratio} |")
    return "\n".join(lines + ([result["note"]] if result["note"] else []))


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
