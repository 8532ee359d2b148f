"""``tapweight compare``: the paired statistics against their textbook forms, and the reuse
of run folders on the toy domain."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tapweight.commands.compare import config_differences, paired
from tapweight.config import to_yaml
from tapweight.job.runner import resolve
from tests.test_cli import cli


def test_paired_t_test_is_the_one_sample_t_test_of_the_differences():
    method = {0: 0.71, 1: 0.68, 2: 0.75, 3: 0.70}
    base = {0: 0.69, 1: 0.69, 2: 0.70, 3: 0.66, 9: 0.5}  # seed 9 has no partner: left out
    result = paired(method, base)
    d = np.array([0.02, -0.01, 0.05, 0.04])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(4))
    assert result.seeds == [0, 1, 2, 3] and result.deltas == pytest.approx(d)
    assert result.t_statistic == pytest.approx(t)
    assert result.t_pvalue == pytest.approx(2 * stats.t.sf(abs(t), df=3))
    assert math.isnan(result.wilcoxon_pvalue)  # 4 pairs: not enough for Wilcoxon


def test_wilcoxon_from_six_pairs_exact():
    base = {s: 0.5 for s in range(6)}
    better = {s: 0.5 + 0.01 * (s + 1) for s in range(6)}  # every seed better
    assert paired(better, base).wilcoxon_pvalue == pytest.approx(2 / 2 ** 6)  # the exact two-sided p
    mixed = {s: 0.5 + 0.01 * (s + 1) * (-1) ** s for s in range(6)}  # ranks 1, 3, 5 up; 2, 4, 6 down
    assert paired(mixed, base).wilcoxon_statistic == 9  # the smaller rank sum, 1 + 3 + 5


def test_no_difference_means_no_test():
    same = {0: 0.7, 1: 0.8}
    result = paired(same, dict(same))
    assert list(result.deltas) == [0, 0] and math.isnan(result.t_pvalue) and math.isnan(result.wilcoxon_pvalue)


def test_config_differences_ignore_seeds_and_name_the_rest(toy, tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(resolve("toy", "blobs", "cpu", sets=["seeds=[0,1]"]).cfg))
    assert config_differences(saved, resolve("toy", "blobs", "cpu", sets=["seeds=[0,1,2]"]).cfg) == []
    changed = config_differences(saved, resolve("toy", "blobs", "cpu", sets=["finetune.lr=0.5"]).cfg)
    assert changed == ["finetune.lr 0.05 → 0.5"]


def test_compare_reuses_its_runs_and_refuses_another_config(toy, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "toy", "blobs,blobs-ce", "--methods", "none,tapweight", "--seeds", "0,1",
            "--quiet", "--out", str(out)]
    assert cli(*args) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert table[["task", "method"]].values.tolist() == [["blobs", "none"], ["blobs", "tapweight"],
                                                         ["blobs-ce", "none"], ["blobs-ce", "tapweight"]]
    assert set(table["metric"]) == {"roc_auc", "accuracy"}
    text = (out / "comparison.md").read_text()
    assert "## blobs: test roc_auc (higher is better)" in text and "## blobs-ce: test accuracy" in text
    # the final λ of the runs that learn it, read back from their weights.csv
    learned = table[table["method"] == "tapweight"].iloc[0]
    last = [pd.read_csv(out / "blobs-tapweight" / f"seed{s}" / "weights.csv").iloc[-1] for s in (0, 1)]
    assert learned["lambda_denoise"] == pytest.approx((last[0]["denoise"] + last[1]["denoise"]) / 2)
    assert learned["lambda_denoise"] + learned["lambda_spread"] == pytest.approx(1.0)
    assert pd.isna(table[table["method"] == "none"].iloc[0]["lambda_denoise"])
    assert "λ at the last step" in text and "| `tapweight` | " in text
    before = (out / "blobs-tapweight" / "seed1" / "metrics.json").read_text()
    assert cli(*args) == 0  # nothing to run again
    assert (out / "blobs-tapweight" / "seed1" / "metrics.json").read_text() == before
    capsys.readouterr()
    assert cli(*args, "--set", "finetune.lr=0.5") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "holds a run of another config (finetune.lr 0.05 → 0.5)" in err


def test_a_baseline_outside_methods_is_read_from_its_finished_runs(toy, tmp_path, capsys):
    out = tmp_path / "cmp"
    common = ["compare", "toy", "blobs", "--seeds", "0,1", "--quiet", "--out", str(out)]
    assert cli(*common, "--methods", "none") == 0
    before = (out / "blobs-none" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert cli(*common, "--methods", "tapweight", "--baseline", "none") == 0
    assert (out / "blobs-none" / "seed0" / "metrics.json").stat().st_mtime_ns == before  # not run again
    table = pd.read_csv(out / "comparison.csv")
    assert table["method"].tolist() == ["none", "tapweight"] and set(table["baseline"]) == {"none"}
    row = table.set_index("method").loc["tapweight"]
    for s in (0, 1):
        base = json.loads((out / "blobs-none" / f"seed{s}" / "metrics.json").read_text())["test"]
        assert row[f"delta_seed{s}"] == pytest.approx(row[f"test_seed{s}"] - base)
    assert "| `none` (baseline) |" in (out / "comparison.md").read_text()
    capsys.readouterr()
    assert cli(*common[:4], "0,1,2", *common[5:], "--methods", "tapweight", "--baseline", "none") == 2
    err = capsys.readouterr().err.strip()
    assert "has not finished seed(s) 2: add it to --methods" in err and "\n" not in err


@pytest.mark.parametrize("extra,message", [
    (["--methods", "none,none"], "listed twice: none"),
    (["--baseline", "uniform"], "--baseline 'uniform' is not one of --methods"),
    (["--methods", "none,magic"], "unknown method 'magic'"),
])
def test_compare_mistakes_are_one_line_before_any_run(toy, tmp_path, capsys, extra, message):
    assert cli("compare", "toy", "blobs", "--methods", "none,tapweight", "--seeds", "0", "--quiet",
               "--out", str(tmp_path / "cmp"), *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "cmp").exists()
