"""End to end, as a user meets the plugin: the ``tapweight`` command line.

Runs go through the Typer app in this process (typer's CliRunner); what depends on a fresh
interpreter (entry-point discovery, the exit code of a user error, the default preset) runs
``python -m tapweight`` in a subprocess. All slow: deselect with ``-m "not slow"``.
"""

import json
import math
import os
import subprocess
import sys

import pytest
from tapweight.commands.cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.slow
FAST = ["--steps", "10", "--set", "final.epochs=3", "--quiet"]


def tapweight(*args: str, cwd, only_tabular: bool = True) -> subprocess.CompletedProcess:
    """Run the command line; by default load only this plugin (the others are slow to import)."""
    env = dict(os.environ, TAPWEIGHT_LOAD_PLUGINS="tabular") if only_tabular else None
    # the timeout is patience, not a measure: a loaded 2-core machine runs 5x slower than idle
    return subprocess.run([sys.executable, "-m", "tapweight", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def run_in_process(*args: str, out) -> dict:
    """``tapweight run tabular ...`` through the Typer app; the run folder's metrics.json."""
    result = CliRunner().invoke(app, ["run", "tabular", *args, *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "metrics.json").read_text())


def test_plugins_and_list_show_the_tabular_domain_beside_the_others(tmp_path):
    report = json.loads(tapweight("plugins", cwd=tmp_path, only_tabular=False).stdout)
    (row,) = [r for r in report if r["name"] == "tabular"]
    assert row["status"] == "loaded" and "tabular.scarf" in row["provides"]["objectives"]
    listing = tapweight("list", "tasks", cwd=tmp_path, only_tabular=False).stdout
    assert "tabular/breast-cancer" in listing and "tabular/diabetes" in listing


@pytest.mark.parametrize("method", [
    ["--method", "none"],
    ["--method", "uniform"],
    ["--method", "fixed", "--set", "weights=[0.2,0.3,0.5]"],
    ["--method", "single:scarf"],
    ["--method", "tapweight"],
], ids=lambda m: m[1])
def test_every_method_runs_breast_cancer_to_a_test_score(tmp_path, method):
    metrics = run_in_process("breast-cancer", *method, out=tmp_path / "run")
    assert metrics["method"] == method[1] and math.isfinite(metrics["test_mean"])
    assert 0.5 < metrics["test_mean"] <= 1.0  # ROC-AUC of a real, easy task


@pytest.mark.parametrize("task", ["wine", "digits", "diabetes"])
def test_other_tasks_run_with_learned_weights(tmp_path, task):
    metrics = run_in_process(task, out=tmp_path / "run")
    assert math.isfinite(metrics["test_mean"])
    lam = (tmp_path / "run" / "seed0" / "weights.csv").read_text().splitlines()
    assert lam[0].count(",") == 3 and len(lam) == 11  # step + 3 weights; header + 10 steps


def test_the_default_command_runs_the_cpu_preset_end_to_end(tmp_path):
    """``tapweight run tabular breast-cancer`` exactly as the README shows it."""
    done = tapweight("run", "tabular", "breast-cancer", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "preset cpu" in (tmp_path / "run" / "log.txt").read_text()
    assert math.isfinite(json.loads((tmp_path / "run" / "metrics.json").read_text())["test_mean"])


def test_a_user_mistake_is_one_line(tmp_path):
    done = tapweight("run", "tabular", "wine", "--data", "x.csv", *FAST, "--out", "run",
                     cwd=tmp_path)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "drop --data" in last


def test_pretrain_on_a_corpus_then_fine_tune_from_its_encoder(tmp_path):
    """``tapweight pretrain tabular`` on unlabelled wine-like rows, then ``run --init`` from it."""
    import numpy as np
    import pandas as pd
    from safetensors.torch import load_file
    from sklearn.datasets import load_wine

    rows = load_wine().data  # [178, 13]
    rng = np.random.default_rng(0)
    noise = 1 + 0.05 * rng.normal(size=(500, rows.shape[1]))
    corpus = rows[rng.integers(0, len(rows), 500)] * noise
    pd.DataFrame(corpus).to_csv(tmp_path / "c.csv", index=False)
    pre = tmp_path / "pre"
    result = CliRunner().invoke(app, ["pretrain", "tabular", "--corpus", str(tmp_path / "c.csv"),
                                      "--steps", "5", "--quiet", "--out", str(pre)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert len(pd.read_csv(pre / "losses.csv")) == 5
    encoder = load_file(pre / "backbone.safetensors")
    assert encoder["net.0.weight"].shape[1] == 13  # sized by the corpus's 13 columns
    encoder_file = str(pre / "backbone.safetensors")
    summary = run_in_process("wine", "--method", "none", "--init", encoder_file,
                             out=tmp_path / "run")
    assert 0 <= summary["test_mean"] <= 1
    assert "loaded from --init" in (tmp_path / "run" / "log.txt").read_text()
