"""The command line as a user meets it: runs, listings, and one-line errors with exit code 2."""

import json

import pandas as pd
import pytest

from tapweight.commands.cli import main


def cli(*args):
    """Run ``tapweight ARGS`` in-process; return the exit code (0 when it returns)."""
    try:
        main(list(args))
    except SystemExit as exit_:
        return exit_.code
    return 0


def run_toy(tmp_path, *extra, name="run"):
    out = tmp_path / name
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(out), *extra) == 0
    return out


def test_run_writes_the_run_folder(toy, tmp_path):
    out = run_toy(tmp_path, "--seeds", "0,1")
    for name in ("config.yaml", "metrics.json", "weights.png", "log.txt"):
        assert (out / name).is_file(), name
    for seed in (0, 1):
        for name in ("weights.csv", "losses.csv", "weights.png", "backbone.safetensors", "metrics.json"):
            assert (out / f"seed{seed}" / name).is_file(), name
        assert not (out / f"seed{seed}" / "checkpoint.pt").exists()  # a finished seed drops it by default
    summary = json.loads((out / "metrics.json").read_text())
    tests = [summary["seeds"][s]["test"] for s in ("0", "1")]
    assert summary["test_mean"] == pytest.approx(sum(tests) / 2)
    weights = pd.read_csv(out / "seed0" / "weights.csv")
    assert list(weights.columns) == ["step", "denoise", "spread"] and len(weights) == 6
    assert weights[["denoise", "spread"]].sum(axis=1).round(6).eq(1).all()
    assert weights["denoise"].iloc[-1] != 0.5  # λ was learned


@pytest.mark.parametrize("method,extra", [
    ("none", []), ("uniform", []), ("single:spread", []),
    ("fixed", ["--set", "weights=[0.7,0.3]"]), ("tapweight", ["--set", "reweight.hypergrad=cg"]),
])
def test_every_method_runs(toy, tmp_path, method, extra):
    out = run_toy(tmp_path, "--method", method, *extra)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["method"] == method and 0 <= summary["test_mean"] <= 1
    if method == "none":
        assert not (out / "seed0" / "weights.csv").exists()
    elif method != "tapweight":
        weights = pd.read_csv(out / "seed0" / "weights.csv").drop(columns="step")
        assert weights.nunique().eq(1).all()  # fixed λ
    if method == "fixed":
        assert weights.iloc[0].tolist() == pytest.approx([0.7, 0.3])


def test_a_finished_seed_drops_its_checkpoint_unless_kept_and_resume_still_skips_it(toy, tmp_path, capsys):
    dropped = run_toy(tmp_path, "--seeds", "0,1", name="dropped")
    log = (dropped / "log.txt").read_text()
    assert "checkpoint.pt deleted once a seed finished (--keep-checkpoint keeps it)" in log
    assert "kept in each seed folder: model.safetensors (the final model: predict, export), backbone.safetensors" in log
    assert not list(dropped.glob("seed*/checkpoint.pt")) and len(list(dropped.glob("seed*/model.safetensors"))) == 2
    before = json.loads((dropped / "metrics.json").read_text())
    assert cli("resume", str(dropped), "--quiet") == 0  # finished seeds are skipped, not retrained
    assert json.loads((dropped / "metrics.json").read_text()) == before
    kept = run_toy(tmp_path, "--keep-checkpoint", name="kept")
    assert (kept / "seed0" / "checkpoint.pt").is_file()
    assert "keep_checkpoint: true" in (kept / "config.yaml").read_text()
    assert "checkpoint.pt (the engine's full state)" in (kept / "log.txt").read_text()
    assert cli("compare", "toy", "blobs", "--methods", "uniform", "--seeds", "0", "--keep-checkpoint", "--quiet",
               "--out", str(tmp_path / "cmp")) == 0
    assert (tmp_path / "cmp" / "blobs-uniform" / "seed0" / "checkpoint.pt").is_file()
    # the same comparison without the flag reuses the finished run: keep_checkpoint changes no number
    assert cli("compare", "toy", "blobs", "--methods", "uniform", "--seeds", "0", "--quiet",
               "--out", str(tmp_path / "cmp")) == 0
    assert "finished seeds are reused" in capsys.readouterr().err


def test_same_seed_same_results(toy, tmp_path):
    a, b = run_toy(tmp_path, name="a"), run_toy(tmp_path, name="b")
    assert (a / "seed0" / "weights.csv").read_text() == (b / "seed0" / "weights.csv").read_text()
    assert (a / "seed0" / "losses.csv").read_text() == (b / "seed0" / "losses.csv").read_text()
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())


def test_ce_and_regression_tasks(toy, tmp_path):
    assert cli("run", "toy", "blobs-ce", "--quiet", "--out", str(tmp_path / "ce")) == 0
    summary = json.loads((tmp_path / "ce" / "metrics.json").read_text())
    assert "test_mcc" in summary["seeds"]["0"]
    assert cli("run", "toy", "blobs-reg", "--quiet", "--out", str(tmp_path / "reg")) == 0


def test_show_list_and_plugins(toy, tmp_path, capsys):
    out = run_toy(tmp_path)
    capsys.readouterr()
    assert cli("show", str(out)) == 0
    assert "λ" in capsys.readouterr().out
    assert cli("list", "tasks") == 0
    assert "toy/blobs" in capsys.readouterr().out
    assert cli("plugins") == 0
    report = json.loads(capsys.readouterr().out)
    toy_row = next(r for r in report if r["name"] == "toy")
    assert toy_row["status"] == "loaded" and "toy/blobs" in toy_row["provides"]["tasks"]
    assert cli("toy-hello") == 0
    assert "hello from toy" in capsys.readouterr().out


def test_a_plugins_estimator_is_listed_runs_and_is_reported(toy, tmp_path, capsys):
    """The toy plugin's estimator: in `tapweight list estimators`, chosen with
    `--set reweight.hypergrad=NAME`; which estimator ran and why is in log.txt, metrics.json
    and `tapweight show`, for the default `auto` too."""
    assert cli("list", "estimators") == 0
    listed = capsys.readouterr().out
    assert "toy-backward" in listed and "fd-forward" in listed
    out = run_toy(tmp_path, "--set", "reweight.hypergrad=toy-backward")
    assert json.loads((out / "metrics.json").read_text())["estimator"] == {
        "name": "toy-backward", "reason": "reweight.hypergrad=toy-backward"}
    assert "hypergradient by toy-backward: reweight.hypergrad=toy-backward" in (out / "log.txt").read_text()
    capsys.readouterr()
    assert cli("show", str(out)) == 0
    assert "hypergradient by toy-backward" in capsys.readouterr().out
    chosen = json.loads((run_toy(tmp_path, name="auto") / "metrics.json").read_text())["estimator"]
    assert chosen["name"] == "fd-forward" and chosen["reason"].startswith("auto: the cheapest estimator")
    uniform = run_toy(tmp_path, "--method", "uniform", name="uniform")  # reads no hypergradient
    assert "estimator" not in json.loads((uniform / "metrics.json").read_text())


@pytest.mark.parametrize("args,message", [
    (["run", "nosuch", "x"], "unknown domain 'nosuch'"),
    (["run", "toy", "blob"], "unknown task 'blob' in domain 'toy'. Did you mean 'blobs'?"),
    (["run", "toy", "blobs", "--method", "magic"], "unknown method 'magic'"),
    (["run", "toy", "blobs", "--method", "single:nope"], "unknown objective 'nope'"),
    (["run", "toy", "blobs", "--set", "pretrain.lrr=1"], "Key 'lrr' not in 'PretrainConfig'"),
    (["run", "toy", "blobs", "--set", "steps=many"], "could not be converted to Integer"),
    (["run", "toy", "blobs", "--set", "toy.hiden=3"], "Key 'hiden' not in 'ToyOptions'"),
    (["run", "toy", "blobs", "--set", "finetune.gamma=-1"], "finetune.gamma must be >= 0"),
    (["run", "toy", "blobs", "--set", "pretrain.batch_size=0"], "pretrain.batch_size must be >= 1"),
    (["run", "toy", "blobs", "--steps", "0"], "steps must be >= 1"),
    (["run", "toy", "blobs", "--method", "fixed"], "needs weights"),
    (["run", "toy", "blobs", "--method", "fixed", "--set", "weights=[1]"], "one weight per objective"),
    (["run", "toy", "blobs", "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["run", "toy", "blobs", "--seeds", "a,b"], "--seeds takes integers"),
    (["run", "toy", "blobs", "--model", "x"], "has no --model option"),
    (["run", "toy", "blobs", "--nope"], "No such option: --nope"),
    (["list", "things"], "cannot list 'things'"),
    (["show", "/nonexistent"], "is not a run folder"),
])
def test_user_errors_are_one_line_exit_2(toy, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert message in err


def test_resume_checks_its_arguments(toy, tmp_path, capsys):
    out = run_toy(tmp_path)
    capsys.readouterr()
    assert cli("run", "toy", "blobs-ce", "--resume", str(out)) == 2
    assert "is a run of toy/blobs, not toy/blobs-ce" in capsys.readouterr().err
    assert cli("run", "toy", "blobs", "--resume", str(out), "--steps", "9") == 2
    assert "drop the other options" in capsys.readouterr().err
    assert cli("run", "toy", "blobs", "--resume", str(out), "--quiet") == 0  # finished: nothing to do


def test_existing_run_folder_is_not_overwritten(toy, tmp_path, capsys):
    out = run_toy(tmp_path)
    before = (out / "metrics.json").read_text()
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before


def test_a_librarys_error_gives_way_to_our_error_line_and_is_kept_otherwise(toy, tmp_path, monkeypatch, capsys):
    """A library that logs an error and then raises (datasets: "Failed to read file ...")
    leaves stderr to our one error line; one that logs an error and carries on is shown once
    (when training starts) and kept in log.txt."""
    import logging

    from tapweight import TapweightError

    load = toy.load

    def failing(cfg):
        logging.getLogger("somelib").error("Failed to read file x")
        raise TapweightError("could not read x")

    def noisy(cfg):
        logging.getLogger("somelib").error("a cache could not be written")
        return load(cfg)

    monkeypatch.setattr(toy, "load", failing)
    capsys.readouterr()
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(tmp_path / "bad")) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: could not read x"]
    monkeypatch.setattr(toy, "load", noisy)
    out = run_toy(tmp_path)
    assert capsys.readouterr().err.count("ERROR somelib: a cache could not be written") == 1
    assert "ERROR somelib: a cache could not be written" in (out / "log.txt").read_text()


def test_library_runs_log_to_the_run_folder(toy, tmp_path, monkeypatch):
    """Without the CLI's logging set-up, log.txt still gets the run's INFO lines."""
    import logging

    from tapweight.job import runner

    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)  # as a library user has it
    runner.run(runner.resolve("toy", "blobs", "cpu"), tmp_path / "lib", quiet=True)
    text = (tmp_path / "lib" / "log.txt").read_text()
    assert "run toy/blobs, method tapweight" in text and "seed 0: val roc_auc" in text
