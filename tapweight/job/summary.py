"""What a seed folder's CSVs say in one line, read with the standard library alone.

``tapweight show`` and the end of a seed print these lines; they read ``weights.csv`` and
``losses.csv`` with `csv` and `statistics`, so that a read-only command starts
without importing pandas or torch (``tests/test_watch.py`` checks it, ``bench startup``
times it). The step-by-step diagnostics (``hypergrad.csv``, the plots) stay in
`tapweight.job.report`.

`overconfidence_line` reports the fine-tuned model's validation overconfidence: as an
INFO line with the measurement, and as a warning only when it is both consistent (its
signal-to-noise ratio above `SIGNAL`) and large (softening w's outputs by 1% would
lower the validation loss by more than `LARGE` %).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from tapweight.errors import TapweightError

#: |SNR| above this: a mean over the steps is unlikely to be noise (about 2 standard errors)
SIGNAL = 2.0
#: elasticity d log L_val / d log s of the validation loss to w's output scale s above which
#: overconfidence is large: 1% softer outputs would lower L_val by more than LARGE %. Default
#: runs: tabular at most 0.04 (15 seeds of 3 tasks); mol BBBP 0.76 (val loss 1.19, above the
#: 0.69 of a coin: the scaffold split's label shift); docs/known-answer.md has the figures
LARGE = 0.25
#: share of the total weight one objective's λ must gain over a seed for the overconfidence to be a
#: warning: the runaway runs of the known-answer checks gained 0.53 to 0.75 (4 objectives),
#: BBBP's default run 0.155 (mg10000 0.200 → 0.355 of 5 objectives, seed 0)
MOVED = 0.25
#: the seed folder's file with the whole overconfidence report
DETAILS = "overconfidence.txt"


def read_columns(path: Path) -> dict[str, list[float]]:
    """A CSV of numbers as its columns (an empty cell is NaN); a damaged file is one line."""
    fix = "it is rewritten by `tapweight resume` from the checkpoint"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        if not body or any(len(row) != len(header) for row in body):
            raise ValueError("no rows" if not body else "rows of unequal length")
        return {name: [float(row[i]) if row[i] else math.nan for row in body] for i, name in enumerate(header)}
    except (ValueError, IndexError, UnicodeDecodeError, csv.Error) as err:
        reason = " ".join(str(err).split())[:100] or type(err).__name__
        raise TapweightError(f"{path} is damaged ({reason}): {fix}") from None


def last_weights(path: Path) -> tuple[int, str]:
    """The last step of a ``weights.csv`` and its λ, as ``name=0.123, ...``."""
    columns = read_columns(path)
    if "step" not in columns:
        raise TapweightError(f"{path} is damaged (no step column): it is rewritten by `tapweight resume` "
                             "from the checkpoint")
    shown = ", ".join(f"{k}={v[-1]:.3f}" for k, v in columns.items() if k != "step")
    return int(columns["step"][-1]), shown


def snr(values: Sequence[float]) -> float:
    """mean / (std / √n) of the finite ``values`` (NaN for fewer than 2; ±inf when they are all equal)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    mean, std = statistics.fmean(finite), statistics.stdev(finite)
    if std == 0:
        return math.copysign(math.inf, mean) if mean else math.nan
    return mean / (std / math.sqrt(len(finite)))


def whole_run_snr(losses: Mapping[str, Sequence[float]], weights: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The signal-to-noise ratio over every step of r_k = g_k − Σ_j λ_j g_j, the part of the
    hypergradient that moves λ (the softmax ignores what all objectives share), per objective;
    empty when the seed learned no weights. Columns as `read_columns` gives them (or a
    data frame)."""
    names = [c.removeprefix("hypergrad_") for c in losses if c.startswith("hypergrad_")]
    if not names:
        return {}
    g = [[float(x) for x in losses[f"hypergrad_{k}"]] for k in names]
    lam = [[float(x) for x in weights[k]] for k in names]
    steps = range(len(g[0]))
    shared = [sum(lam[j][t] * g[j][t] for j in range(len(names))) for t in steps]
    return {k: snr([g[i][t] - shared[t] for t in steps]) for i, k in enumerate(names)}


def signal_line(folder: Path) -> str | None:
    """One line on whether the hypergradient held a signal for λ over a seed's steps so far,
    or None when the seed learned no weights."""
    folder = Path(folder)
    if not (folder / "losses.csv").is_file() or not (folder / "weights.csv").is_file():
        return None
    ratios = whole_run_snr(read_columns(folder / "losses.csv"), read_columns(folder / "weights.csv"))
    if not ratios:
        return None
    shown = ", ".join(f"{k} {v:+.1f}" for k, v in ratios.items())
    return (f"signal-to-noise ratio of the hypergradient that moves λ, over the run: {shown} "
            f"(|SNR| < {SIGNAL:g}: no consistent signal; > 0: λ falls)")


def overconfidence(folder: Path) -> dict[str, float] | None:
    """w's validation overconfidence over the second half of a seed's steps (``val_overconfidence``
    of ``losses.csv``, d L_val(s · outputs)/ds at s = 1): its ``mean``, ``snr`` and ``elasticity``
    (the mean over the mean validation loss: d log L_val / d log s); None before 4 steps."""
    path = Path(folder) / "losses.csv"
    if not path.is_file():
        return None
    losses = read_columns(path)
    if "val_overconfidence" not in losses or len(losses["val_overconfidence"]) < 4:
        return None
    half = len(losses["val_overconfidence"]) // 2
    late = [v for v in losses["val_overconfidence"][half:] if math.isfinite(v)]
    if len(late) < 2:
        return None
    mean = statistics.fmean(late)
    val = [v for v in losses.get("val_loss", [])[half:] if math.isfinite(v)]
    loss = statistics.fmean(val) if val else math.nan
    return {"mean": mean, "snr": snr(late), "elasticity": mean / loss if loss > 0 else math.inf}


def moved_weight(folder: Path) -> tuple[str, float, float] | None:
    """The objective whose λ gained most between the first and last row of ``weights.csv``:
    ``(name, first, last)``; None without the file."""
    path = Path(folder) / "weights.csv"
    if not path.is_file():
        return None
    columns = {k: v for k, v in read_columns(path).items() if k != "step"}
    if not columns:
        return None
    name = max(columns, key=lambda k: columns[k][-1] - columns[k][0])
    return name, columns[name][0], columns[name][-1]


def overconfidence_line(folder: Path) -> tuple[int, str] | None:
    """``(level, line)`` (a logging level, WARNING or INFO) on w's validation overconfidence
    over the second half of a seed's steps, or None when there is nothing to say (no measurement,
    or w was not consistently overconfident).

    An overconfident validation loss falls when the features shrink, so the hypergradient
    then favours any objective that shrinks them, useful to the task or not (the "Does
    learning λ work?" page); level II weight decay keeps w calibrated. That changes what a
    user should do only when λ followed it, so a warning needs a consistent (SNR > `SIGNAL`)
    and large (elasticity > `LARGE`) overconfidence *and* one objective that gained more than
    `MOVED` of the total weight; otherwise it is an INFO line. Either is one line;
    `overconfidence_details` writes the rest into the seed folder."""
    found = overconfidence(folder)
    if found is None or not found["snr"] > SIGNAL:
        return None
    measured = (f"val_overconfidence {found['mean']:+.3g}, SNR {found['snr']:+.1f}: 1% softer outputs "
                f"would lower the validation loss by {found['elasticity']:.2g}%")
    if not found["elasticity"] > LARGE:
        return logging.INFO, (f"w was slightly overconfident on its validation batches over the second half of the "
                              f"steps ({measured}; a warning from {LARGE:g}%)")
    moved = moved_weight(folder)
    if moved is None or not moved[2] - moved[1] > MOVED:
        held = "" if moved is None else f" (largest gain: {moved[0]} {moved[1]:.3f} → {moved[2]:.3f})"
        return logging.INFO, (f"w was overconfident on its validation batches over the second half of the steps "
                              f"({measured}), but λ did not follow it{held}: nothing to change; "
                              f"{DETAILS} says why it is reported")
    return logging.WARNING, (f"λ of {moved[0]} rose from {moved[1]:.3f} to {moved[2]:.3f} while w was overconfident on "
                             f"its validation batches ({measured}): that rewards objectives that shrink the features, "
                             f"useful or not; more level II weight decay (finetune.weight_decay) keeps w calibrated "
                             f"({DETAILS} in the seed folder has the rest)")


def overconfidence_details(folder: Path) -> str | None:
    """The text of ``overconfidence.txt``: the one line, what the measurement means and what
    to try; None when there is no line."""
    said = overconfidence_line(folder)
    if said is None:
        return None
    return "\n".join([
        said[1], "",
        "val_overconfidence (losses.csv, one value per step) is the slope d L_val(s * outputs)/ds at s = 1 of",
        "the fine-tuned model w's validation loss in the scale s of its outputs: above 0, softer outputs would",
        "lower it. Such a validation loss also falls when the pretrained features shrink, so the hypergradient",
        "that moves λ then favours objectives that shrink them, whether or not they help the task.",
        "",
        f"It is reported when consistent over the second half of the steps (SNR > {SIGNAL:g}), and a warning only",
        f"when also large (1% softer outputs lower the validation loss by more than {LARGE:g}%) and one",
        f"objective's λ gained more than {MOVED:g} of the total weight: the pattern in which λ ran away towards a",
        "feature-shrinking objective in the known-answer checks. Without that gain λ did not follow the",
        "overconfidence, and nothing needs to change.",
        "",
        "What to try when it is a warning:",
        "- finetune.weight_decay (level II weight decay) keeps an overfit w calibrated;",
        "- reweight.val_loss=offset_free discounts a label balance that differs between the training and",
        "  validation splits (binary tasks with scaffold splits);",
        "- weights.png's bottom panel draws the overconfidence over the steps beside λ.", ""])


def number(value) -> str:
    """A metric for people: four decimals, or "n/a" when undefined (NaN, null, missing)."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.4f}"
    return "n/a"


def mean_pm_std(summary: dict, key: str = "test") -> str:
    """``mean ± std`` over the seeds; a single seed's value alone (its spread is unknown)."""
    if len(summary.get("seeds", ())) == 1:
        return number(summary.get(f"{key}_mean"))
    return f"{number(summary.get(f'{key}_mean'))} ± {number(summary.get(f'{key}_std'))}"
