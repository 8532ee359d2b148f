"""``tapweight compare DOMAIN TASKS --methods ... --seeds ...``: methods × seeds × tasks.

Each method × task is an ordinary run folder, ``OUT/<task>-<method>``, run with every seed;
a folder that exists is continued, not redone: seeds already finished are skipped (the
runner's resume), so an interrupted comparison continues where it stopped when the same
command runs again, and more seeds can be added later. A folder made with another config
(other than its seeds) is refused, so that a table never mixes settings.

The comparison is paired: every method sees the same seeds, and a seed fixes the split and
the initialisation, so the per-seed difference method − baseline removes what the seeds
share. Written into ``OUT``:

A ``--baseline`` that is not one of the methods is not run: its finished runs are read from
``OUT/<task>-<baseline>`` (same config, every seed finished), so new methods can be paired
with a baseline compared before.

- ``comparison.md``: per task, each method's test metric (mean ± sample std over seeds, and
  per seed), its validation metric, the per-seed differences against the baseline with
  their mean ± std, a paired t-test (``scipy.stats.ttest_rel``, two-sided; n ≥ 2) and a
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided, exact for n ≤ 50; n ≥ 6,
  because with n ≤ 5 pairs its smallest two-sided p-value is 2/2ⁿ ≥ 0.0625; seeds whose Δ is
  0 are dropped by it, SciPy's default ``zero_method``);
- ``comparison.csv``: the same numbers, one row per task × method, per-seed columns
  ``test_seed<k>`` and ``delta_seed<k>``;
- ``comparison.png``: per task, each seed's test metric per method (lines join a seed's
  results, so the pairing shows) and each method's mean ± std.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from tapweight.config import to_yaml
from tapweight.errors import TapweightError
from tapweight.files import atomic_write
from tapweight.interrupts import Interrupted
from tapweight.job import runner
from tapweight.method.metrics import HIGHER_IS_BETTER
from tapweight.plugin.manager import build_registry

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)
MIN_WILCOXON = 6  # pairs below which the exact two-sided Wilcoxon p-value cannot reach 0.05


def run_folder(out: Path, task: str, method: str) -> Path:
    return out / f"{task}-{method.replace(':', '-')}"


def config_differences(saved: Path, cfg) -> list[str]:
    """The config keys whose value in ``saved`` (a config.yaml) differs from ``cfg``, aside from
    the seeds and the keys that change no number (``keep_checkpoint``)."""
    old = OmegaConf.to_container(OmegaConf.load(saved))
    new = OmegaConf.to_container(OmegaConf.create(to_yaml(cfg)))

    def walk(a, b, prefix=""):
        for key in sorted(set(a) | set(b)):
            if not prefix and key in ("seed", "seeds", "keep_checkpoint"):
                continue
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                yield from walk(x, y, f"{prefix}{key}.")
            elif x != y:
                yield f"{prefix}{key} {x} → {y}"

    return list(walk(old, new))


def run_or_reuse(job, folder: Path, quiet: bool) -> dict:
    """Run ``job`` into ``folder``, continuing the folder when it holds a run of the same config."""
    resume = (folder / "config.yaml").is_file()
    if resume:
        changed = config_differences(folder / "config.yaml", job.cfg)
        if changed:
            raise TapweightError(f"'{folder}' holds a run of another config ({'; '.join(changed[:4])}): "
                                 "pick another --out, or delete that folder to redo it")
        atomic_write(folder / "config.yaml", lambda tmp: tmp.write_text(to_yaml(job.cfg)))  # its seeds
        log.info("continuing %s: finished seeds are reused", folder)
    try:
        return runner.run(job, folder, quiet, resume=resume)
    except Interrupted as err:
        raise Interrupted(err.signum, f"{err}; or run the same `tapweight compare` again to continue "
                                      "the comparison") from None


def finished_runs(job, folder: Path, seeds: list[int], methods: list[str]) -> dict:
    """The summary of a baseline that is not run: every one of ``seeds`` finished in ``folder``
    with ``job``'s config (seeds aside), else one line saying what is missing."""
    why = None
    if not (folder / "config.yaml").is_file():
        why = f"'{folder}' holds no run"
    elif changed := config_differences(folder / "config.yaml", job.cfg):
        why = f"'{folder}' holds a run of another config ({'; '.join(changed[:4])})"
    elif missing := [s for s in seeds if not (folder / f"seed{s}" / "metrics.json").is_file()]:
        why = f"'{folder}' has not finished seed(s) {', '.join(map(str, missing))}"
    if why:
        raise TapweightError(f"--baseline '{job.cfg.method}' is not one of --methods ({', '.join(methods)}) "
                             f"and {why}: add it to --methods to run it")
    return {"metric": job.task.metric, "seeds": {s: OmegaConf.to_container(
        OmegaConf.load(folder / f"seed{s}" / "metrics.json")) for s in seeds}}


@dataclass(frozen=True)
class Paired:
    """One method against the baseline over their common seeds."""

    seeds: list[int]
    deltas: np.ndarray  # method − baseline, per seed
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired(method: dict[int, float], baseline: dict[int, float]) -> Paired:
    """Per-seed differences and the paired tests (NaN where n does not allow a test, or
    where every difference is zero: the tests are undefined then)."""
    seeds = sorted(set(method) & set(baseline))
    a = np.array([method[s] for s in seeds])
    b = np.array([baseline[s] for s in seeds])
    deltas = a - b
    t = w = (np.nan, np.nan)
    if np.any(deltas != 0):
        with warnings.catch_warnings():  # constant differences: t is ±inf, p = 0, which scipy warns of
            warnings.simplefilter("ignore", RuntimeWarning)
            if len(seeds) >= 2:
                t = tuple(stats.ttest_rel(a, b))
            if len(seeds) >= MIN_WILCOXON:
                w = tuple(stats.wilcoxon(a, b))
    return Paired(seeds, deltas, float(t[0]), float(t[1]), float(w[0]), float(w[1]))


def compare(domain: str, tasks: list[str], methods: list[str], seeds: list[int], out: Path,
            baseline: str | None = None, preset: str = "auto", config_file: str | None = None,
            options: dict | None = None, sets: list[str] = (), quiet: bool = False) -> pd.DataFrame:
    """Run (or reuse) every method × task over ``seeds`` into ``out`` and write the comparison
    files; return the table of ``comparison.csv``."""
    if not tasks or not methods or not seeds:
        raise TapweightError("compare needs at least one task, one method and one seed")
    baseline = baseline or methods[0]
    twice = [str(x) for group in (tasks, methods, seeds) for x in sorted(set(group)) if list(group).count(x) > 1]
    if twice:
        raise TapweightError(f"listed twice: {', '.join(twice)}")
    out, registry = Path(out), build_registry()
    jobs = {(task, method): runner.resolve(domain, task, preset, config_file,
                                           {**(options or {}), "method": method, "seeds": list(seeds)}, sets,
                                           registry=registry)
            for task in tasks for method in methods}  # every config is checked before any run
    names = {task: jobs[(task, methods[0])].task.shown_name for task in tasks}  # custom: the data's name
    reused = {}
    if baseline not in methods:  # a baseline outside --methods is read from its finished runs in OUT
        reused = {(names[task], baseline): finished_runs(runner.resolve(
            domain, task, preset, config_file, {**(options or {}), "method": baseline, "seeds": list(seeds)},
            sets, registry=registry), run_folder(out, names[task], baseline), seeds, methods) for task in tasks}
        methods = [baseline, *methods]
    jobs = {(names[task], method): job for (task, method), job in jobs.items()}
    tasks = [names[task] for task in tasks]
    summaries = {key: run_or_reuse(job, run_folder(out, *key), quiet) for key, job in jobs.items()}
    table = comparison_table({**reused, **summaries}, tasks, methods, seeds, baseline, out)
    atomic_write(out / "comparison.csv", lambda tmp: table.to_csv(tmp, index=False))
    text = comparison_markdown(table, domain, seeds, baseline)
    atomic_write(out / "comparison.md", lambda tmp: tmp.write_text(text))
    plot_comparison(table, seeds, out / "comparison.png")
    log.info("comparison of %s over %d task(s) and %d seed(s) -> %s", ", ".join(methods), len(tasks),
             len(seeds), out / "comparison.md")
    return table


def per_seed(summary: dict, key: str, seeds: list[int]) -> dict[int, float]:
    """``key`` (``test``, ``val``) of each of ``seeds`` in a run's summary."""
    results = {int(s): r for s, r in summary["seeds"].items()}
    return {s: float("nan") if results[s].get(key) is None else float(results[s][key]) for s in seeds}


def comparison_table(summaries: dict, tasks, methods, seeds, baseline: str, out: Path) -> pd.DataFrame:
    rows = []
    for task in tasks:
        base = per_seed(summaries[(task, baseline)], "test", seeds)
        for method in methods:
            summary = summaries[(task, method)]
            test, val = per_seed(summary, "test", seeds), per_seed(summary, "val", seeds)
            pair = paired(test, base)
            tests, vals = np.array(list(test.values())), np.array(list(val.values()))
            row = {"task": task, "method": method, "baseline": baseline, "metric": summary["metric"],
                   "higher_is_better": HIGHER_IS_BETTER[summary["metric"]], "n_seeds": len(seeds),
                   "test_mean": tests.mean(), "test_std": sample_std(tests),
                   "val_mean": vals.mean(), "val_std": sample_std(vals),
                   "delta_mean": pair.deltas.mean(), "delta_std": sample_std(pair.deltas),
                   "t_statistic": pair.t_statistic, "t_pvalue": pair.t_pvalue,
                   "wilcoxon_statistic": pair.wilcoxon_statistic, "wilcoxon_pvalue": pair.wilcoxon_pvalue,
                   "folder": str(run_folder(out, task, method))}
            row.update(final_lambda(run_folder(out, task, method), seeds))
            row.update({f"test_seed{s}": test[s] for s in seeds})
            row.update({f"delta_seed{s}": d for s, d in zip(pair.seeds, pair.deltas)})
            rows.append(row)
    return pd.DataFrame(rows)


def final_lambda(folder: Path, seeds: list[int]) -> dict[str, float]:
    """``lambda_<objective>`` and ``lambda_<objective>_std``: each objective's weight at the
    last step, mean and sample std over ``seeds`` (empty for a method without λ curves)."""
    curves = [folder / f"seed{s}" / "weights.csv" for s in seeds]
    if not all(c.is_file() for c in curves):
        return {}
    last = pd.DataFrame([pd.read_csv(c).iloc[-1] for c in curves]).drop(columns="step")
    out = {}
    for name in last.columns:
        out[f"lambda_{name}"] = float(last[name].mean())
        out[f"lambda_{name}_std"] = sample_std(last[name].to_numpy())
    return out


def sample_std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def fmt(value: float, digits: int = 4) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def signed(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.4f}"


def pvalue(value: float, why_not: str) -> str:
    return why_not if not np.isfinite(value) else (f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}")


def comparison_markdown(table: pd.DataFrame, domain: str, seeds: list[int], baseline: str) -> str:
    n = len(seeds)
    lines = [f"# {domain}: {', '.join(table['method'].unique())} over seeds {', '.join(map(str, seeds))}",
             "",
             f"Test metric per method: mean ± sample standard deviation over {n} seed(s), and per seed. "
             f"Δ = method − `{baseline}` on the same seed (same split and initialisation), mean ± std. "
             "Paired t-test: `scipy.stats.ttest_rel`, two-sided (n ≥ 2). Wilcoxon signed-rank: "
             "`scipy.stats.wilcoxon`, two-sided, exact (n ≥ 6: with n ≤ 5 pairs its smallest "
             "two-sided p-value is 2/2ⁿ ≥ 0.0625; it drops the seeds whose Δ is 0). Neither test is "
             "defined when every Δ is 0.", ""]
    for task, rows in table.groupby("task", sort=False):
        metric = rows["metric"].iloc[0]
        better = "higher" if rows["higher_is_better"].iloc[0] else "lower"
        lines += [f"## {task}: test {metric} ({better} is better)", "",
                  f"| method | test {metric} | per seed | val {metric} | Δ per seed | Δ mean ± std "
                  "| paired t-test p | Wilcoxon p |", "|---|---|---|---|---|---|---|---|"]
        for _, r in rows.iterrows():
            per = ", ".join(fmt(r[f"test_seed{s}"], 3) for s in seeds)
            if r["method"] == baseline:
                lines.append(f"| `{r['method']}` (baseline) | {fmt(r['test_mean'])} ± {fmt(r['test_std'])} "
                             f"| {per} | {fmt(r['val_mean'])} ± {fmt(r['val_std'])} | – | – | – | – |")
                continue
            deltas = ", ".join(signed(r[f"delta_seed{s}"]) for s in seeds)
            no_delta = "n/a (every Δ is 0)" if r["delta_mean"] == 0 and r["delta_std"] == 0 else None
            lines.append(
                f"| `{r['method']}` | {fmt(r['test_mean'])} ± {fmt(r['test_std'])} | {per} "
                f"| {fmt(r['val_mean'])} ± {fmt(r['val_std'])} | {deltas} "
                f"| {signed(r['delta_mean'])} ± {fmt(r['delta_std'])} "
                f"| {pvalue(r['t_pvalue'], no_delta or 'n/a (n < 2)')} "
                f"| {pvalue(r['wilcoxon_pvalue'], no_delta or f'n/a (n = {n} < {MIN_WILCOXON})')} |")
        lines += lambda_lines(rows)
        lines.append("")
    return "\n".join(lines)


def lambda_lines(rows: pd.DataFrame) -> list[str]:
    """Each method's λ at the last step, per objective (mean ± std over seeds)."""
    names = [c[len("lambda_"):] for c in rows.columns if c.startswith("lambda_") and not c.endswith("_std")]
    if not names:
        return []
    lines = ["", "λ at the last step (mean ± std over seeds):", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for _, r in rows.iterrows():
        if not np.isfinite(r.get(f"lambda_{names[0]}", np.nan)):
            continue
        cells = [f"{fmt(r[f'lambda_{n}'], 3)} ± {fmt(r[f'lambda_{n}_std'], 3)}" for n in names]
        lines.append(f"| `{r['method']}` | " + " | ".join(cells) + " |")
    return lines


def plot_comparison(table: pd.DataFrame, seeds: list[int], path: Path) -> None:
    tasks = list(table["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = table[table["task"] == task]
        x = np.arange(len(rows))
        for s in seeds:  # one line per seed: its result under each method
            ax.plot(x, rows[f"test_seed{s}"], color="0.6", marker="o", markersize=3, linewidth=0.8)
        ax.errorbar(x, rows["test_mean"], yerr=rows["test_std"].fillna(0), fmt="s", color="C3",
                    capsize=4, markersize=6, label="mean ± std")
        ax.set_xticks(x, rows["method"])
        ax.set_title(f"{task}: test {rows['metric'].iloc[0]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
