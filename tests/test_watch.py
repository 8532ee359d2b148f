"""Watching a run: the CSVs grow step by step, trackers receive every step (TensorBoard,
MLflow, a plugin's), the console reads well without a terminal, and the hypergradient's
diagnostics that help judge λ."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapweight.job.progress import StepStatus
from tapweight.job.report import hypergradient_diagnostics
from tapweight.job.summary import overconfidence_line, read_columns, whole_run_snr
from tests import toy_plugin
from tests.test_cli import cli, run_toy
from tests.test_reliability import LAUNCH, same_run

LEARNED = {"lambda/denoise", "lambda/spread", "loss/denoise", "loss/spread", "hypergrad/denoise",
           "hypergrad/spread", "task/finetune_loss", "task/val_loss", "task/val_overconfidence"}


@pytest.fixture
def reports(monkeypatch):
    """What the toy plugin's ``recorder`` tracker is sent, for one test."""
    monkeypatch.setattr(toy_plugin, "REPORTS", [])
    return toy_plugin.REPORTS


def test_csv_rows_are_written_as_the_run_goes_and_trackers_get_every_step(toy, tmp_path, reports):
    out = run_toy(tmp_path, "--set", "report_to=[recorder]")
    (report,) = reports
    assert report["start"] == 0 and report["closed"]
    # the tracker is called after each step's row is on disk: weights.csv had `step` rows
    assert report["csv_rows"][:6] == [(s, s) for s in range(1, 7)]
    weights, losses = pd.read_csv(out / "seed0" / "weights.csv"), pd.read_csv(out / "seed0" / "losses.csv")
    for step, values in report["values"][:6]:
        assert set(values) == LEARNED
        assert values["lambda/spread"] == weights["spread"][step - 1]
        assert values["task/val_loss"] == losses["val_loss"][step - 1]
        assert values["hypergrad/denoise"] == losses["hypergrad_denoise"][step - 1]
    # the final fine-tune's 2 epochs continue the step axis, then the seed's results
    assert [(s, set(v)) for s, v in report["values"][6:8]] == [(7, {"final/val_roc_auc"}), (8, {"final/val_roc_auc"})]
    step, results = report["values"][8]
    summary = json.loads((out / "metrics.json").read_text())
    assert step == 8 and results["result/test"] == summary["seeds"]["0"]["test"]


def test_a_crash_between_checkpoints_then_resume_gives_the_same_files(toy, tmp_path, reports, monkeypatch):
    """Rows written after the last checkpoint are dropped on resume, then written again."""
    args = ["--set", "checkpoint_every=3", "--set", "report_to=[recorder]"]
    whole = run_toy(tmp_path, *args, name="whole")
    monkeypatch.setattr(toy_plugin.Recorder, "crash_at", 5)
    cut = tmp_path / "cut"
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(cut), *args) == 130
    assert len(pd.read_csv(cut / "seed0" / "weights.csv")) == 5  # two steps past the checkpoint
    monkeypatch.setattr(toy_plugin.Recorder, "crash_at", None)
    assert cli("resume", str(cut), "--quiet") == 0
    same_run(whole, cut)
    assert [r["start"] for r in reports] == [0, 0, 3]  # whole, cut, resumed at the checkpoint
    assert [s for s, _ in reports[2]["values"][:3]] == [4, 5, 6]


def test_tensorboard_holds_every_step_once_after_a_crash_and_resume(toy, tmp_path, monkeypatch):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    args = ["--set", "checkpoint_every=3", "--set", "report_to=[tensorboard,recorder]"]
    monkeypatch.setattr(toy_plugin.Recorder, "crash_at", 5)  # tensorboard already has step 5
    out = tmp_path / "run"
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(out), *args) == 130
    monkeypatch.setattr(toy_plugin.Recorder, "crash_at", None)
    assert cli("resume", str(out), "--quiet") == 0
    events = accumulator.EventAccumulator(str(out / "seed0" / "tensorboard"))
    events.Reload()
    weights, losses = pd.read_csv(out / "seed0" / "weights.csv"), pd.read_csv(out / "seed0" / "losses.csv")
    lam = events.Scalars("lambda/denoise")
    assert [e.step for e in lam] == [1, 2, 3, 4, 5, 6]  # 4 and 5 of the crashed run were purged
    np.testing.assert_allclose([e.value for e in lam], weights["denoise"], rtol=1e-6)  # float32
    np.testing.assert_allclose([e.value for e in events.Scalars("task/val_loss")], losses["val_loss"], rtol=1e-6)
    summary = json.loads((out / "metrics.json").read_text())
    (test,) = events.Scalars("result/test")
    assert test.step == 8 and test.value == pytest.approx(summary["seeds"]["0"]["test"], rel=1e-6)
    assert [e.step for e in events.Scalars("final/val_roc_auc")] == [7, 8]


def test_mlflow_run_per_seed_with_config_and_every_step(toy, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = run_toy(tmp_path, "--set", "report_to=[mlflow]", "--seeds", "0,1")
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    for seed in (0, 1):
        run_id = json.loads((out / f"seed{seed}" / "mlflow.json").read_text())["run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == f"run-seed{seed}"
        assert run.data.params["finetune.gamma"] == "0.001" and run.data.params["seed"] == str(seed)
        history = sorted(client.get_metric_history(run_id, "lambda/spread"), key=lambda m: m.step)
        weights = pd.read_csv(out / f"seed{seed}" / "weights.csv")
        assert [m.step for m in history] == list(range(1, 7))
        np.testing.assert_allclose([m.value for m in history], weights["spread"], rtol=1e-12)
        summary = json.loads((out / "metrics.json").read_text())
        assert run.data.metrics["result/test"] == pytest.approx(summary["seeds"][str(seed)]["test"])


def test_an_unknown_or_missing_tracker_is_one_line(toy, tmp_path, capsys):
    assert cli("run", "toy", "blobs", "--out", str(tmp_path / "a"), "--set", "report_to=[tensorbord]") == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown logger 'tensorbord'. Did you mean 'tensorboard'? See `tapweight list loggers`."
    assert not (tmp_path / "a").exists()


def test_status_line_shows_lambda_and_the_losses_of_the_last_steps():
    status = StepStatus(window=2)
    for step, (a, val) in enumerate([(9.0, 5.0), (1.0, 2.0), (3.0, 4.0)], start=1):
        status.update({"step": step, "finetune_loss": 0.5, "val_loss": val, "loss_a": a, "lambda_a": 0.25 * step})
    assert status.line() == "λ a=0.750 | loss a=2 | finetune 0.5 val 3"
    uniform = StepStatus(window=5)
    uniform.update({"step": 1, "loss_a": 1.5, "lambda_a": 1.0})
    assert uniform.line() == "λ a=1.000 | loss a=1.5"


def _windows(values: np.ndarray, window: int):
    """Independent answer: per step, the mean and mean / (std / √n) of the trailing window."""
    means, snrs = [], []
    for t in range(len(values)):
        part = values[max(0, t - window + 1): t + 1]
        if len(part) < 2:
            means.append(np.full(values.shape[1], np.nan))
            snrs.append(np.full(values.shape[1], np.nan))
            continue
        mean, std = part.mean(0), part.std(0, ddof=1)
        means.append(mean)
        snrs.append(mean / (std / np.sqrt(len(part))))
    return np.array(means), np.array(snrs)


def test_hypergradient_diagnostics_match_a_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    steps, names = 30, ["a", "b", "c"]
    g = rng.normal([0.5, 0.0, -0.2], 1.0, size=(steps, 3))
    lam = rng.dirichlet([1, 1, 1], size=steps)
    weights = pd.DataFrame(lam, columns=names).assign(step=np.arange(1, steps + 1))
    losses = pd.DataFrame(g, columns=[f"hypergrad_{k}" for k in names]).assign(step=np.arange(1, steps + 1))
    losses["val_overconfidence"] = over = rng.normal(0.1, 1.0, steps)
    table = hypergradient_diagnostics(weights, losses, window=7)
    np.testing.assert_allclose(table["val_overconfidence_mean"], _windows(over[:, None], 7)[0][:, 0], rtol=1e-12)
    relative = np.array([g[t] - lam[t] @ g[t] for t in range(steps)])  # ∂L/∂α_k = λ_k · this
    for prefix, values in (("hypergrad", g), ("relative", relative)):
        mean, snr = _windows(values, 7)
        np.testing.assert_allclose(table[[f"{prefix}_mean_{k}" for k in names]], mean, rtol=1e-12)
        np.testing.assert_allclose(table[[f"{prefix}_snr_{k}" for k in names]], snr, rtol=1e-9)
    expected = relative.mean(0) / (relative.std(0, ddof=1) / np.sqrt(steps))
    losses.to_csv(tmp_path / "losses.csv", index=False)
    weights.to_csv(tmp_path / "weights.csv", index=False)
    read = read_columns(tmp_path / "losses.csv"), read_columns(tmp_path / "weights.csv")
    for whole in (whole_run_snr(losses, weights), whole_run_snr(*read)):  # data frames, or the CSVs as show reads them
        assert list(whole) == names
        np.testing.assert_allclose(list(whole.values()), expected, rtol=1e-9)


def test_a_hypergradient_all_objectives_share_does_not_move_lambda():
    """The softmax ignores a component common to every g_k: the relative part is zero."""
    common = np.linspace(-1, 1, 10)[:, None].repeat(2, axis=1)
    weights = pd.DataFrame({"step": range(1, 11), "a": 0.3, "b": 0.7})
    losses = pd.DataFrame({"step": range(1, 11), "hypergrad_a": common[:, 0], "hypergrad_b": common[:, 1]})
    table = hypergradient_diagnostics(weights, losses)
    assert np.allclose(table[["relative_mean_a", "relative_mean_b"]].iloc[1:], 0, atol=1e-15)
    assert hypergradient_diagnostics(weights, losses.drop(columns=["hypergrad_a", "hypergrad_b"])) is None


def test_a_run_writes_hypergradient_diagnostics_beside_its_csvs(toy, tmp_path):
    out = run_toy(tmp_path)
    table = pd.read_csv(out / "seed0" / "hypergrad.csv")
    assert len(table) == 6 and "relative_snr_spread" in table.columns
    losses = pd.read_csv(out / "seed0" / "losses.csv")
    assert np.isfinite(losses["val_overconfidence"]).all()  # w on each step's val batch
    assert "signal-to-noise ratio of the hypergradient that moves λ" in (out / "log.txt").read_text()
    uniform = run_toy(tmp_path, "--method", "uniform", name="uniform")
    assert not (uniform / "seed0" / "hypergrad.csv").exists()  # no hypergradient: nothing to judge


def test_a_run_that_stays_overconfident_late_is_reported_and_warned_of_when_large(tmp_path):
    """The line reads the second half of ``val_overconfidence``: consistently above 0 there is
    reported, whatever came before; noise around 0, or overconfidence only early, is not. It
    is a warning only when large (d log L_val / d log s, the slope over the validation loss,
    above summary.LARGE) and λ followed it (one objective gained more than summary.MOVED);
    a large overconfidence that λ did not follow is one INFO line."""
    import logging

    from tapweight.job import summary

    rng = np.random.default_rng(0)
    early, late = -np.ones(50), 0.05 + 0.05 * rng.standard_normal(50)
    large_loss, small_loss = late.mean() / (2 * summary.LARGE), late.mean() / (summary.LARGE / 2)
    ran_away = np.linspace(0.25, 0.25 + 2 * summary.MOVED, 100)  # one objective of 4 gains 2·MOVED
    held = np.linspace(0.25, 0.25 + summary.MOVED / 2, 100)
    cases = (("large", np.r_[early, late], large_loss, ran_away, logging.WARNING),
             ("held", np.r_[early, late], large_loss, held, logging.INFO),
             ("small", np.r_[early, late], small_loss, ran_away, logging.INFO),
             ("noise", 0.05 * rng.standard_normal(100), large_loss, ran_away, None),
             ("early", np.r_[late, early], large_loss, ran_away, None))
    for name, values, loss, lam, level in cases:
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame({"step": range(1, 101), "val_loss": loss, "val_overconfidence": values}).to_csv(
            folder / "losses.csv", index=False)
        rest = (1 - lam) / 3
        pd.DataFrame({"step": range(1, 101), "a": rest, "b": lam, "c": rest, "d": rest}).to_csv(
            folder / "weights.csv", index=False)
        said = overconfidence_line(folder)
        assert (said and said[0]) == level, (name, said)
    level, line = overconfidence_line(tmp_path / "large")
    assert "finetune.weight_decay" in line and f"val_overconfidence {late.mean():+.3g}" in line
    assert f"by {2 * summary.LARGE:.2g}%" in line  # 1 % softer outputs: 2·LARGE % lower loss
    assert f"λ of b rose from 0.250 to {0.25 + 2 * summary.MOVED:.3f}" in line and "\n" not in line
    assert "finetune.weight_decay" not in overconfidence_line(tmp_path / "small")[1]
    level, line = overconfidence_line(tmp_path / "held")
    assert "λ did not follow it" in line and "finetune.weight_decay" not in line and "\n" not in line
    details = summary.overconfidence_details(tmp_path / "large")
    assert details.startswith(overconfidence_line(tmp_path / "large")[1]) and "offset_free" in details
    assert summary.overconfidence_details(tmp_path / "noise") is None


def test_the_python_api_shows_warnings_and_plain_lines_on_stderr_when_logging_is_not_configured(tmp_path):
    """A script (or notebook) calling tapweight.run: its warnings reach stderr, not only log.txt, and
    without a terminal the progress is a plain line every log_every steps, never a bar. A run
    folder whose last owner died leaves a stale lock: the run warns that it takes it over."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid 1 on elsewhere since 2000-01-01 00:00:00")
    script = ("import sys, tapweight\nfrom tapweight.plugin import manager\nfrom tests import toy_plugin\n"
              "manager.register_plugin(toy_plugin, 'toy')\n"
              "result = tapweight.run('toy', 'blobs', out=sys.argv[1], log_every=3)\nprint(result.metric)\n")
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "roc_auc\n"
    lines = done.stderr.splitlines()
    stale = f"WARNING tapweight.job.folder: run folder {out}: its last owner (pid 1 on elsewhere since 2000-01-01 "
    assert sum(line.startswith(stale) for line in lines) == 1, done.stderr
    assert [line.split()[3] for line in lines if line.startswith("INFO tapweight: step ")] == ["3/6", "6/6"]
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
    assert stale in (out / "log.txt").read_text()
    configured = ("import logging\nlogging.basicConfig()\nlogging.getLogger().handlers[0].setLevel(logging.ERROR)\n"
                  + script)  # the program's handler, and its level, stand
    again = subprocess.run([sys.executable, "-c", configured, str(tmp_path / "quiet")], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parents[1])
    assert again.returncode == 0 and again.stderr == "", again.stderr[-2000:]


def test_output_without_a_terminal_is_plain_and_unwrapped(tmp_path):
    """stderr and stdout to pipes: --quiet implied (no bar redraws), paths on one line."""
    out = tmp_path / ("a-long-folder-name-" * 8) / "run"
    done = subprocess.run([*LAUNCH, "run", "toy", "blobs", "--out", str(out), "--set", "log_every=2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr + done.stdout
    steps = [line for line in done.stderr.splitlines() if line.startswith("INFO tapweight: step ")]
    assert [line.split()[3] for line in steps] == ["2/6", "4/6", "6/6"]
    assert all(" | loss denoise=" in line and " val " in line for line in steps)
    assert f"-> {out}" in done.stderr
    assert done.stdout.splitlines()[-1] == f"run folder: {out}"
    assert "±" not in done.stdout  # one seed: no spread to show


def test_version_show_and_a_single_seed_summary(toy, tmp_path, capsys):
    assert cli("--version") == 0
    assert capsys.readouterr().out == "tapweight 0.1.0\n"
    out = run_toy(tmp_path)
    capsys.readouterr()
    assert cli("show", str(out)) == 0
    shown = capsys.readouterr().out
    order = ["test roc_auc", "seed0: step 6, λ", "seed0: signal-to-noise ratio of the hypergradient that moves "
             "λ, over the run: denoise ", "used:", "objectives: toy.denoise, toy.spread (the domain's default)",
             "backbone: toy.mlp (the domain's default), from random weights", "head: core.linear",
             f"every key: tapweight show {out} --config"]
    assert [shown.index(text) for text in order] == sorted(shown.index(text) for text in order), shown
    assert "config.yaml:" not in shown and "mean ± std" not in shown
    assert cli("show", str(out), "--config") == 0
    full = capsys.readouterr().out
    assert full.index("used:") < full.index("config.yaml:\n") and "  gamma: 0.001" in full
    two = run_toy(tmp_path, "--seeds", "0,1", name="two")
    capsys.readouterr()
    assert cli("show", str(two)) == 0
    assert "mean ± std" in capsys.readouterr().out


HEAVY = ("torch", "rdkit", "transformers", "datasets", "sklearn", "pandas", "matplotlib", "scipy")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list", "tasks"], ["list", "domains"],
                                  ["list", "options"], ["plugins"], ["show", "RUN"], ["show", "RUN", "--config"],
                                  ["run"], ["run", "nosuchdomain", "task"], ["run", "RUN_DOMAIN", "nosuchtask"],
                                  ["show", "RUN", "--nosuchoption"]])
def test_the_quick_commands_import_no_heavy_library(args, tmp_path):
    """What makes `tapweight --help` take seconds: importing torch and friends (timed in
    bench/startup.py); every installed plugin's registration included. RUN: a finished run
    folder of the first installed domain (bench/startup.py's)."""
    from bench.startup import fake_run

    run = fake_run(tmp_path / "run")
    domain = json.loads((run / "metrics.json").read_text())["domain"]
    args = [{"RUN": str(run), "RUN_DOMAIN": domain}.get(a, a) for a in args]
    code = ("import sys\nfrom tapweight.commands.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            f"    pass\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
    if args[0] == "show" and len(args) == 2:
        assert "used:" in done.stdout and "seed0: step 100, λ" in done.stdout, done.stdout


def test_a_run_log_shows_and_writes_each_line_once(tmp_path):
    """The second seed rebuilds the same data and backbone: its warnings repeat the first's."""
    import logging

    from tapweight.job.log import RunLog

    console = logging.Handler()
    console.tapweight, shown = True, []
    console.emit = lambda record: shown.append(record.getMessage())
    root, log = logging.getLogger(), logging.getLogger("tapweight.test")
    root.addHandler(console)
    try:
        with RunLog() as run_log:
            run_log.open(tmp_path / "log.txt")
            for seed in (0, 1):
                log.warning("backbone starts from random weights")
                log.info("data image_size: 64")
                if seed == 0:
                    run_log.start()
                log.info("seed %d: val 0.5", seed)
    finally:
        root.removeHandler(console)
    assert shown == ["backbone starts from random weights", "data image_size: 64", "seed 0: val 0.5",
                     "seed 1: val 0.5"]
    written = (tmp_path / "log.txt").read_text()
    assert written.count("random weights") == 1 and written.count("image_size") == 1 and "seed 1" in written
    log.warning("backbone starts from random weights")  # after the run: the filter is gone
