"""What a run leaves behind besides checkpoints: λ and loss trajectories, plots, metrics.

``weights.csv`` and ``losses.csv`` grow by one row per global step while the run goes
(`Trajectory`), so ``tail -f`` and plotting work mid-run and a crash keeps them; a
resumed seed first rewrites them from its checkpoint, dropping rows written after it, so
an interrupted and resumed run leaves the same bytes as an uninterrupted one.

``hypergrad.csv`` and the lower panels of ``weights.png`` help judge λ
(`hypergradient_diagnostics`): per objective, the running mean of the hypergradient and
its signal-to-noise ratio over a trailing window, so a flat λ reads as "no consistent signal"
rather than "broken"; `tapweight.job.summary` puts the whole run's in one line (and w's
validation overconfidence, the state in which λ favours feature-shrinking objectives).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tapweight.files import atomic_write
from tapweight.job.summary import SIGNAL
from tapweight.plugin.specs import Table

#: steps in the trailing window of the hypergradient's running mean and signal-to-noise ratio
WINDOW = 50
#: ``hypergrad.csv``'s running mean of w's ``val_overconfidence`` (metrics.overconfidence)
OVERCONFIDENCE = "val_overconfidence_mean"


def _split(record: dict[str, float]) -> tuple[dict, dict]:
    """A step's record as its ``weights.csv`` row (step, λ_k) and ``losses.csv`` row."""
    weights = {"step": record["step"]}
    losses = {"step": record["step"]}
    for key, value in record.items():
        if key.startswith("lambda_"):
            weights[key.removeprefix("lambda_")] = value
        elif key != "step":
            losses[key] = value
    return weights, losses


class Trajectory:
    """A seed's ``weights.csv`` (step, λ_k) and ``losses.csv`` (step, the level II and
    validation losses, the hypergradient ``hypergrad_<k>``, the objectives' ``loss_<k>``),
    one row per global step."""

    def __init__(self, folder: Path):
        self.paths = (Path(folder) / "weights.csv", Path(folder) / "losses.csv")

    def restart(self, history: Sequence[dict[str, float]]) -> None:
        """Make the files hold exactly ``history`` (the checkpoint's steps; none: no files)."""
        rows = list(zip(*(_split(r) for r in history))) or [[], []]
        for path, table in zip(self.paths, rows):
            if not table:
                path.unlink(missing_ok=True)
                continue
            lines = [_line(table[0].keys())] + [_line(row.values()) for row in table]
            text = "".join(lines)
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text))

    def append(self, record: dict[str, float]) -> None:
        """Add one step's row to each file (with the header when the file is new)."""
        for path, row in zip(self.paths, _split(record)):
            new = not path.exists()
            with open(path, "a") as fh:
                fh.write((_line(row.keys()) if new else "") + _line(row.values()))


def _line(values) -> str:
    """One CSV line; numbers as Python writes them (shortest repr: they read back exactly)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def hypergradient_diagnostics(weights: pd.DataFrame, losses: pd.DataFrame,
                              window: int = WINDOW) -> pd.DataFrame | None:
    """Per objective k and step t, over the last ``window`` steps (fewer at the start):

    - ``hypergrad_mean_<k>``, ``hypergrad_snr_<k>``: the running mean of dL_val/dλ_k and its
      signal-to-noise ratio mean / (std / √n);
    - ``relative_mean_<k>``, ``relative_snr_<k>``: the same for r_k = g_k − Σ_j λ_j g_j, the
      part of the hypergradient that moves λ (the α gradient is λ_k r_k: the softmax ignores
      what all objectives share). r_k > 0 on average: λ_k falls; |SNR| < 2: no consistent signal.

    - ``val_overconfidence_mean``: the running mean of ``val_overconfidence`` (when recorded).

    None when the run learned no weights (no ``hypergrad_<k>`` columns)."""
    names = [c.removeprefix("hypergrad_") for c in losses.columns if c.startswith("hypergrad_")]
    if not names:
        return None
    g = losses[[f"hypergrad_{k}" for k in names]].to_numpy(dtype=float)  # [T, K]
    lam = weights[names].to_numpy(dtype=float)  # [T, K], the λ each step's g was taken at
    relative = g - (lam * g).sum(axis=1, keepdims=True)
    out = {"step": losses["step"].to_numpy()}
    for prefix, values in (("hypergrad", g), ("relative", relative)):
        rolling = pd.DataFrame(values, columns=names).rolling(window, min_periods=2)
        mean, std, n = rolling.mean(), rolling.std(), rolling.count()
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = mean / (std / np.sqrt(n))
        for k in names:
            out[f"{prefix}_mean_{k}"] = mean[k].to_numpy()
            out[f"{prefix}_snr_{k}"] = snr[k].to_numpy()
    if "val_overconfidence" in losses:
        out[OVERCONFIDENCE] = losses["val_overconfidence"].rolling(window, min_periods=2).mean().to_numpy()
    return pd.DataFrame(out)


def write_diagnostics(folder: Path) -> pd.DataFrame | None:
    """``hypergrad.csv`` of a seed folder from its ``weights.csv`` and ``losses.csv``."""
    folder = Path(folder)
    table = hypergradient_diagnostics(pd.read_csv(folder / "weights.csv"), pd.read_csv(folder / "losses.csv"))
    if table is not None:
        atomic_write(folder / "hypergrad.csv", lambda tmp: table.to_csv(tmp, index=False))
    return table


def plot_weights(folders: list[Path], path: Path, title: str) -> None:
    """λ_k over steps; below it, when λ was learned, the running mean of the relative
    hypergradient, its signal-to-noise ratio and w's validation overconfidence
    (`hypergradient_diagnostics`).

    Several runs (seeds) are drawn as thin lines around their mean. The legend sits beside
    the axes, never on a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = [pd.read_csv(Path(f) / "weights.csv") for f in folders]
    diagnostics = [d for d in (_read_diagnostics(Path(f)) for f in folders) if d is not None]
    names = [c for c in weights[0].columns if c != "step"]
    panels = [("λ (objective weight)", weights, "")]
    if len(diagnostics) == len(weights):
        panels += [(f"relative hypergradient\n(mean of last {WINDOW} steps)", diagnostics, "relative_mean_"),
                   ("its signal-to-noise\nratio", diagnostics, "relative_snr_")]
        if all(OVERCONFIDENCE in d for d in diagnostics):
            panels.append(("w's validation\noverconfidence", diagnostics, None))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 + 2.0 * len(panels)), sharex=True, squeeze=False)
    for ax, (label, frames, prefix) in zip(axes[:, 0], panels):
        series = ([(f"{prefix}{name}", f"C{i}", name) for i, name in enumerate(names)] if prefix is not None
                  else [(OVERCONFIDENCE, "black", None)])
        for column, color, name in series:
            steps = frames[0]["step"]
            for frame in frames if len(frames) > 1 else []:
                ax.plot(frame["step"], frame[column], color=color, alpha=0.3, linewidth=0.8)
            mean = np.mean([f[column].to_numpy()[: len(steps)] for f in frames], axis=0)
            ax.plot(steps, mean, color=color, linewidth=2, label=name)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if len(panels) > 1:
        axes[1, 0].axhline(0, color="black", linewidth=0.8)
        snr = axes[2, 0]
        for level in (-SIGNAL, SIGNAL):
            snr.axhline(level, color="black", linewidth=0.8, linestyle="--")
        snr.text(1.01, SIGNAL, f"±{SIGNAL:g}: signal", transform=snr.get_yaxis_transform(),
                 va="center", fontsize=8)
    if len(panels) > 3:
        over = axes[3, 0]
        over.axhline(0, color="black", linewidth=0.8, linestyle="--")
        over.text(1.01, 0, "> 0: softer predictions\nwould lower L_val", transform=over.get_yaxis_transform(),
                  va="center", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("global step")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title="objective")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)


def _read_diagnostics(folder: Path) -> pd.DataFrame | None:
    path = folder / "hypergrad.csv"
    return pd.read_csv(path) if path.is_file() else None


def write_predictions(table: Table, rows: np.ndarray, preds: np.ndarray, path: Path,
                      classes: Sequence[str] = (), probabilities: np.ndarray | None = None) -> None:
    """``predictions.csv`` of one split: per example its ``row`` in the loaded table, its
    ``input`` when inputs are strings (SMILES, sentences), its labels and ``pred_<label>``
    (regression: original units; ``bce``: probabilities; ``ce``: class ids, with
    ``pred_<label>_class`` the class's name and ``prob_<class>`` each class's probability
    when ``classes`` and ``probabilities`` are given)."""
    preds = np.asarray(preds).reshape(len(rows), -1)  # [n, T]
    frame = pd.DataFrame({"row": rows})
    inputs = [table.inputs[r] for r in rows]
    if all(isinstance(x, str) for x in inputs):
        frame["input"] = inputs
    for i, name in enumerate(table.label_names):
        frame[name] = table.labels[rows, i]
    for i, name in enumerate(table.label_names):
        frame[f"pred_{name}"] = preds[:, i]
    if classes:
        frame[f"pred_{table.label_names[0]}_class"] = np.asarray(classes, dtype=object)[preds[:, 0].astype(int)]
    if probabilities is not None:
        for c in range(probabilities.shape[1]):
            frame[f"prob_{classes[c] if classes else c}"] = probabilities[:, c]
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
