"""What a run leaves behind besides checkpoints: λ and loss trajectories, plots, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tapweight.checkpoint import atomic_write  # noqa: E402
from tapweight.specs import Table  # noqa: E402


def write_trajectory(history: list[dict], folder: Path) -> None:
    """``weights.csv`` (step, λ_k) and ``losses.csv`` (step, every logged loss)."""
    frame = pd.DataFrame(history)
    lam = ["step"] + [c for c in frame.columns if c.startswith("lambda_")]
    weights = frame[lam].rename(columns=lambda c: c.removeprefix("lambda_"))
    atomic_write(folder / "weights.csv", lambda tmp: weights.to_csv(tmp, index=False))
    rest = ["step"] + [c for c in frame.columns if not c.startswith("lambda_") and c != "step"]
    atomic_write(folder / "losses.csv", lambda tmp: frame[rest].to_csv(tmp, index=False))


def plot_weights(csv_files: list[Path], path: Path, title: str) -> None:
    """λ_k over steps; several runs (seeds) are drawn as thin lines around their mean."""
    frames = [pd.read_csv(f) for f in csv_files]
    names = [c for c in frames[0].columns if c != "step"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        color = f"C{i}"
        for frame in frames if len(frames) > 1 else []:
            ax.plot(frame["step"], frame[name], color=color, alpha=0.3, linewidth=0.8)
        steps = frames[0]["step"]
        mean = np.mean([f[name].to_numpy()[: len(steps)] for f in frames], axis=0)
        ax.plot(steps, mean, color=color, linewidth=2, label=name)
    ax.set_xlabel("global step")
    ax.set_ylabel("λ (objective weight)")
    ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_predictions(table: Table, rows: np.ndarray, preds: np.ndarray, path: Path) -> None:
    """``predictions.csv`` of one split: per example its ``row`` in the loaded table, its
    ``input`` when inputs are strings (SMILES, sentences), its labels and ``pred_<label>``
    (regression: original units; ``bce``: probabilities; ``ce``: class ids)."""
    preds = np.asarray(preds).reshape(len(rows), -1)  # [n, T]
    frame = pd.DataFrame({"row": rows})
    inputs = [table.inputs[r] for r in rows]
    if all(isinstance(x, str) for x in inputs):
        frame["input"] = inputs
    for i, name in enumerate(table.label_names):
        frame[name] = table.labels[rows, i]
    for i, name in enumerate(table.label_names):
        frame[f"pred_{name}"] = preds[:, i]
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(Path(path), lambda tmp: frame.to_csv(tmp, index=False))


def json_safe(value):
    """``value`` with NaN and infinities as None (JSON's null): JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(data: dict, path: Path) -> None:
    """Strict JSON (an undefined metric is null, never a bare NaN)."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def summarize(results: dict[int, dict[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation over seeds of every numeric result (a result read
    back as null counts as NaN)."""
    keys = sorted({k for r in results.values() for k, v in r.items() if isinstance(v, (int, float))})
    out = {}
    for key in keys:
        values = np.array([np.nan if r.get(key) is None else r[key] for r in results.values()
                           if key in r], dtype=float)
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


def number(value) -> str:
    """A metric for people: four decimals, or "n/a" when undefined (NaN, null, missing)."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.4f}"
    return "n/a"


def mean_pm_std(summary: dict, key: str = "test") -> str:
    return f"{number(summary.get(f'{key}_mean'))} ± {number(summary.get(f'{key}_std'))}"
