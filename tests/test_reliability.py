"""Runs that survive: signals and resume, crafted checkpoints, concurrent runs, full disks,
NaN losses, several processes launched as docs/several-gpus.md launches them."""

import errno
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tapweight.config import RunConfig
from tapweight.errors import TapweightError
from tapweight.job import checkpoint, session
from tapweight.job.folder import LOCK, RunFolder
from tests.test_bad_inputs import Payload, torch_bytes, unfinished
from tests.test_cli import cli, run_toy

LAUNCH = [sys.executable, str(Path(__file__).parent / "launch_toy.py")]
SHARDABLE = ["--set", "toy.batchnorm=false", "--set", "toy.noise=0", "--set", "objectives=[denoise,center]"]
TAPWEIGHT = [sys.executable, "-m", "tapweight"]
#: torchrun as docs/several-gpus.md calls it (the script beside this Python), else its module
TORCHRUN = ([str(Path(sys.executable).with_name("torchrun"))]
            if Path(sys.executable).with_name("torchrun").exists()
            else [sys.executable, "-m", "torch.distributed.run"])
TWO = [*TORCHRUN, "--standalone", "--nproc_per_node", "2"]
TABULAR_ENV = dict(os.environ, TAPWEIGHT_LOAD_PLUGINS="tabular")  # the other domains import slowly
#: seconds a subprocess may take before the test gives up: generous, a failure and not a measure
#: (a toy run takes ~5 s on an idle 2-core machine and ~25 s with both cores busy)
PATIENCE = 600


def toy(*args, out, **kwargs):
    return subprocess.run([*LAUNCH, "run", "toy", "blobs", "--quiet", "--out", str(out), *args],
                          capture_output=True, text=True, **kwargs)


def same_run(a: Path, b: Path) -> None:
    """Byte for byte the same results: λ, losses, per-seed and overall metrics."""
    for name in ("seed0/weights.csv", "seed0/losses.csv", "seed0/metrics.json", "metrics.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def errors(stderr: str) -> str:
    """The lines of a failed launch worth reading (torchrun's report buries them)."""
    return "\n".join(line for line in stderr.splitlines() if "error" in line.lower() or "rank" in line)


def interrupt(command: list[str], sig: int, ready, stderr: Path, env=None) -> int:
    """Start ``command`` (stderr to the file ``stderr``), send ``sig`` once ``ready()`` holds,
    and return its exit code."""
    with open(stderr, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.time() + PATIENCE
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"it ended before the signal: {stderr.read_text()[-2000:]}"
        proc.send_signal(sig)
        return proc.wait(timeout=PATIENCE)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["--steps", "150", "--set", "checkpoint_every=10"]
    assert toy(*args, out=tmp_path / "whole").returncode == 0
    cut = tmp_path / "cut"
    code = interrupt([*LAUNCH, "run", "toy", "blobs", "--quiet", "--out", str(cut), *args], signal.SIGKILL,
                     lambda: (cut / "seed0" / "checkpoint.pt").exists(), tmp_path / "stderr.txt")
    assert code == -signal.SIGKILL
    assert not (cut / "metrics.json").exists(), "the run finished before it was killed"
    assert (cut / LOCK).exists()  # a killed owner cannot remove its lock file: it is stale
    done = subprocess.run([*LAUNCH, "resume", str(cut), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ended without releasing it" in (cut / "log.txt").read_text()  # the stale lock, reported
    assert "resumed seed 0 at step" in (cut / "log.txt").read_text()
    assert not (cut / LOCK).exists()
    same_run(tmp_path / "whole", cut)


def test_a_plugins_weighting_resumes_after_sigkill_as_if_never_stopped(tmp_path):
    """The toy plugin's ``toy-trend`` weighting keeps state of its own (a running mean of the
    hypergradient and the last losses): the checkpoint holds it, so the resumed run is the
    uninterrupted one byte for byte."""
    args = ["--method", "toy-trend", "--steps", "60", "--set", "checkpoint_every=10"]
    assert toy(*args, out=tmp_path / "whole").returncode == 0
    cut = tmp_path / "cut"
    code = interrupt([*LAUNCH, "run", "toy", "blobs", "--quiet", "--out", str(cut), *args], signal.SIGKILL,
                     lambda: (cut / "seed0" / "checkpoint.pt").exists(), tmp_path / "stderr.txt")
    assert code == -signal.SIGKILL and not (cut / "metrics.json").exists()
    assert torch.load(cut / "seed0" / "checkpoint.pt")["weighting"]["mean"] is not None
    done = subprocess.run([*LAUNCH, "resume", str(cut), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed seed 0 at step" in (cut / "log.txt").read_text()
    same_run(tmp_path / "whole", cut)
    lam = pd.read_csv(cut / "seed0" / "weights.csv")
    assert lam.iloc[-1, 1:].std() > 0.01  # the rule moved λ: its state mattered


#: a real run of the tabular plugin, a few seconds; a log line per step tells when to interrupt
TABULAR = ["run", "tabular", "breast-cancer", "--preset", "cpu", "--steps", "40", "--set", "final.epochs=5",
           "--quiet", "--set", "log_every=1"]


@pytest.fixture(scope="module")
def tabular_whole(tmp_path_factory) -> Path:
    """The uninterrupted tabular run the interrupted ones must reproduce."""
    pytest.importorskip("tapweight_tabular")
    out = tmp_path_factory.mktemp("tabular") / "whole"
    done = subprocess.run([*TAPWEIGHT, *TABULAR, "--out", str(out)], env=TABULAR_ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(sig, tabular_whole, tmp_path):
    cut, stderr = tmp_path / "cut", tmp_path / "stderr.txt"
    code = interrupt([*TAPWEIGHT, *TABULAR, "--out", str(cut)], sig, lambda: "step 5/" in stderr.read_text(),
                     stderr, env=TABULAR_ENV)
    assert code == 128 + sig  # 130 for SIGINT, 143 for SIGTERM
    step = torch.load(cut / "seed0" / "checkpoint.pt")["step"]
    assert 5 <= step < 40
    assert stderr.read_text().strip().splitlines()[-1] == \
        f"interrupted at step {step}; continue with: tapweight resume {cut}"
    assert not (cut / "metrics.json").exists() and not (cut / LOCK).exists()
    done = subprocess.run([*TAPWEIGHT, "resume", str(cut), "--quiet"], env=TABULAR_ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed seed 0 at step {step}" in (cut / "log.txt").read_text()
    same_run(tabular_whole, cut)


def test_a_signal_before_the_first_step_leaves_no_folder(toy, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data loads: the half-made folder goes, the exit code says SIGINT."""
    load = toy.load

    def load_then_ctrl_c(cfg):
        table = load(cfg)
        os.kill(os.getpid(), signal.SIGINT)  # the handler raises here, as Ctrl-C would
        return table

    monkeypatch.setattr(toy, "load", load_then_ctrl_c)
    capsys.readouterr()
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(tmp_path / "runs" / "cut")) == 130
    assert capsys.readouterr().err.strip() == "interrupted before the first step; nothing was saved"
    assert not (tmp_path / "runs").exists()


def test_checkpoints_are_due_every_n_steps_and_every_m_minutes(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    run = session.Session(tmp_path, resume=False)
    run.begin_seed(0, 1)
    on_time = RunConfig(checkpoint_every=0, checkpoint_minutes=5.0)
    clock[0] = 299.0
    assert not run.checkpoint_due(on_time, 7)
    clock[0] = 300.0
    assert run.checkpoint_due(on_time, 8)
    run.saved(8)
    assert not run.checkpoint_due(on_time, 9)
    by_steps = RunConfig(checkpoint_every=10, checkpoint_minutes=0)
    clock[0] = 1e6
    assert [s for s in range(1, 31) if run.checkpoint_due(by_steps, s)] == [10, 20, 30]


def test_a_crafted_checkpoint_runs_no_code_on_resume(tmp_path):
    """A pickle whose loading creates a file: ``resume`` refuses it and the file never appears."""
    out, marker = tmp_path / "run", tmp_path / "pwned.txt"
    assert toy(out=out).returncode == 0
    unfinished(out)
    crafted = torch_bytes({"step": 3, "theta": Payload(str(marker))})
    (tmp_path / "copy.pt").write_bytes(crafted)
    torch.load(tmp_path / "copy.pt", weights_only=False)  # what an unpickling loader would do
    assert marker.exists()
    marker.unlink()
    (out / "seed0" / "checkpoint.pt").write_bytes(crafted)
    done = subprocess.run([*LAUNCH, "resume", str(out), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: checkpoint {out / 'seed0' / 'checkpoint.pt'} holds Python objects besides tensors (io.open); "
        f"tapweight does not unpickle them (that could run code): delete {out / 'seed0' / 'checkpoint.pt'} to restart "
        "this seed from step 0"]
    assert not marker.exists()


def test_two_runs_into_one_folder_exactly_one_proceeds(tmp_path):
    out = tmp_path / "run"
    command = [*LAUNCH, "run", "toy", "blobs", "--quiet", "--out", str(out)]
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((proc.wait(timeout=PATIENCE), proc.stderr.read()) for proc in procs)
    assert [code for code, _ in results] == [0, 2]
    refused = results[1][1].strip().splitlines()
    # "in use by pid N", or "by another process" when the owner holds the lock but has not yet written its pid
    assert len(refused) == 1 and ("is in use by" in refused[0] or "already exists" in refused[0])
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["task"] == "blobs" and not (out / LOCK).exists()


def test_the_lock_names_its_owner_and_a_stale_lock_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    with RunFolder(folder, resume=False):
        assert f"pid {os.getpid()} on " in (folder / LOCK).read_text()
        with pytest.raises(TapweightError, match=f"'{folder}' is in use by pid {os.getpid()} on .*pick another --out"):
            RunFolder(folder, resume=True).__enter__()
        (folder / "config.yaml").write_text("domain: toy\n")
    assert not (folder / LOCK).exists()  # released, and removed
    (folder / LOCK).write_text("pid 4242 on node7 since 2026-01-01 00:00:00")  # its owner died
    with caplog.at_level(logging.WARNING), RunFolder(folder, resume=True):
        pass
    assert "its last owner (pid 4242 on node7 since 2026-01-01 00:00:00) ended without releasing it" in caplog.text


def test_a_run_that_fails_before_its_first_step_leaves_nothing_and_the_retry_works(toy, tmp_path):
    out = tmp_path / "runs" / "a" / "run"
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(out), "--set", "split=nosuch") == 2  # after mkdir
    assert not (tmp_path / "runs").exists()
    assert cli("run", "toy", "blobs", "--quiet", "--out", str(out)) == 0


def test_resume_removes_half_written_files(toy, tmp_path):
    out = run_toy(tmp_path)
    unfinished(out)
    (out / "seed0" / ".checkpoint.pt.k2j4h.tmp").write_bytes(b"half a checkpoint")
    assert cli("resume", str(out), "--quiet") == 0
    assert not list(out.rglob("*.tmp")) and (out / "metrics.json").exists()


def test_every_file_of_a_run_folder_honours_the_umask(toy, tmp_path):
    old = os.umask(0o027)
    try:
        out = run_toy(tmp_path)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {"0o640"}, modes


def test_metrics_json_is_strict_json_when_a_metric_is_undefined(toy, tmp_path, monkeypatch):
    from tapweight.job import seed
    from tapweight.method.models import TaskModel

    def nan_scores(backbone, make_head, data, *args, **kwargs):  # (scores, test predictions, model)
        return ({"val": float("nan"), "test": float("nan"), "best_epoch": 0}, np.full((len(data.test), 1), np.nan),
                TaskModel(backbone, make_head()))

    monkeypatch.setattr(seed, "refinetune", nan_scores)
    out = run_toy(tmp_path, "--seeds", "0,1")
    text = (out / "metrics.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert summary["seeds"]["0"]["val"] is None and summary["test_mean"] is None


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    result = toy("--set", "pretrain.lr=1e25", "--set", "checkpoint_every=1", "--steps", "20", out=out)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: non-finite loss at step 2 \(objective denoise = (nan|inf)", last), last
    assert "Traceback" not in result.stderr
    state = torch.load(out / "seed0" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["theta"].values())


def test_a_full_disk_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_state({"step": 1}, path)
    good = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(TapweightError, match="No space left on device.*previous file is kept"):
        checkpoint.save_state({"step": 2}, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """torchrun, gloo, 2 CPU processes: λ agrees with one process to 1e-5. The two sum the
    losses in another order; the default one-sided difference divides that float32 rounding by
    its radius (0.001): measured 2.3e-6 after 6 steps (1e-6 held at the earlier radius 0.01)."""
    single = toy(*SHARDABLE, out=tmp_path / "one")
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([*TWO, *LAUNCH[1:], "run", "toy", "blobs", "--quiet", "--out",
                          str(tmp_path / "two"), *SHARDABLE], capture_output=True, text=True)
    assert ddp.returncode == 0, errors(ddp.stderr)
    one = pd.read_csv(tmp_path / "one" / "seed0" / "weights.csv")
    two = pd.read_csv(tmp_path / "two" / "seed0" / "weights.csv")
    assert len(one) == len(two) == 6
    assert (one - two).abs().to_numpy().max() < 1e-5
    assert one["denoise"].iloc[-1] != 0.5  # λ moved, so the comparison means something


@pytest.mark.slow
def test_the_ranks_wait_for_a_slow_rank_zero_past_the_step_timeout(tmp_path):
    """torchrun, gloo, 2 processes, the steps' collectives limited to 10 s: rank 0's final
    fine-tune takes 25 s longer, and rank 1, waiting for its result, outlasts it (with a wait
    as short as a step's, rank 1 times out: ``--wait-as-long``)."""
    slow = Path(__file__).parent / "launch_slow_rank_zero.py"
    done = subprocess.run([*TWO, str(slow), "10", "25", "run", "toy", "blobs", "--quiet", "--out",
                           str(tmp_path / "run"), *SHARDABLE], capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 0, errors(done.stderr)
    assert "Timed out" not in done.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["seeds"]["0"]["test"] is not None


@pytest.mark.slow
def test_torchrun_runs_the_readme_command_with_one_summary(tmp_path):
    """The launch of docs/several-gpus.md, defaults only: breast-cancer's 57-row validation split does not
    split over 2 processes, so the stream reads 56 of its rows per batch."""
    pytest.importorskip("tapweight_tabular")
    done = subprocess.run([*TWO, "-m", "tapweight", "run", "tabular", "breast-cancer", "--preset", "cpu",
                           "--steps", "20", "--out", "run"], cwd=tmp_path, env=TABULAR_ENV,
                          capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 0, errors(done.stderr)
    assert done.stdout.count("run folder: run") == 1  # one summary, from rank 0
    assert done.stderr.count("seed 0: val roc_auc") == 1 and "[rank 1]" not in done.stderr
    assert (tmp_path / "run" / "log.txt").read_text().count("seed 0: val roc_auc") == 1
    assert len(pd.read_csv(tmp_path / "run" / "seed0" / "weights.csv")) == 20


def test_a_torchrun_rank_ends_with_the_commands_exit_code_and_output():
    """A rank (WORLD_SIZE > 1) ends with ``os._exit`` (``cli.end_rank``): what it printed
    and its exit code must survive the skipped interpreter shutdown."""
    env = dict(os.environ, WORLD_SIZE="2")
    version = subprocess.run([*TAPWEIGHT, "--version"], env=env, capture_output=True, text=True)
    assert (version.returncode, version.stdout.split()[0]) == (0, "tapweight")
    usage = subprocess.run([*TAPWEIGHT, "run", "toy", "--nosuch"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2
    assert usage.stderr.strip().splitlines() == ["error: No such option: --nosuch (Possible options: --out)"]


#: objectives that are means over examples and draw no random numbers (every feature masked,
#: no noise), and the forward-mode hypergradient: the central difference's float32
#: cancellation alone moves λ by ~4e-5 over 20 steps between 1 and 2 processes
DETERMINISTIC = ["--set", "objectives=[mfr,denoise]", "--set", "tabular.mfr_mask_rate=1.0",
                 "--set", "tabular.denoise_sigma=0", "--set", "reweight.hypergrad=jvp"]


@pytest.mark.slow
def test_torchrun_matches_one_process_and_resumes_after_sigterm(tmp_path):
    """Two processes, SIGTERM to torchrun at step 5, ``resume`` under torchrun: λ equals one
    process's with the same global batches (56 validation rows) to 1e-6, and the metrics."""
    pytest.importorskip("tapweight_tabular")
    args = ["run", "tabular", "breast-cancer", "--preset", "cpu", "--steps", "20", "--set", "final.epochs=3",
            "--quiet", "--set", "log_every=1", *DETERMINISTIC]
    one = subprocess.run([*TAPWEIGHT, *args, "--set", "reweight.batch_size=56", "--out", str(tmp_path / "one")],
                         env=TABULAR_ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two, stderr = tmp_path / "two", tmp_path / "stderr.txt"
    interrupt([*TWO, "-m", "tapweight", *args, "--out", str(two)], signal.SIGTERM,
              lambda: "step 5/" in stderr.read_text(), stderr, env=TABULAR_ENV)
    step = torch.load(two / "seed0" / "checkpoint.pt")["step"]
    assert 5 <= step < 20
    assert stderr.read_text().count(f"interrupted at step {step}; continue with: tapweight resume {two}") == 1
    done = subprocess.run([*TWO, "-m", "tapweight", "resume", str(two), "--quiet"], env=TABULAR_ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, errors(done.stderr)
    lam_one = pd.read_csv(tmp_path / "one" / "seed0" / "weights.csv")
    lam_two = pd.read_csv(two / "seed0" / "weights.csv")
    assert len(lam_one) == len(lam_two) == 20
    assert (lam_one - lam_two).abs().to_numpy().max() < 1e-6
    assert abs(lam_one["mfr"].iloc[-1] - 0.5) > 0.05  # λ moved, so the comparison means something
    result_one = json.loads((tmp_path / "one" / "metrics.json").read_text())["seeds"]["0"]
    result_two = json.loads((two / "metrics.json").read_text())["seeds"]["0"]
    assert result_two == pytest.approx(result_one, abs=1e-6)
