"""Runs that survive: kill and resume, full disks, NaN losses, several processes."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tapweight import checkpoint
from tapweight.errors import TapweightError

LAUNCH = [sys.executable, str(Path(__file__).parent / "launch_toy.py")]
SHARDABLE = ["--set", "toy.batchnorm=false", "--set", "toy.noise=0", "--set", "objectives=[denoise,center]"]


def toy(*args, out, **kwargs):
    return subprocess.run([*LAUNCH, "run", "toy", "blobs", "--quiet", "--out", str(out), *args],
                          capture_output=True, text=True, **kwargs)


def same_run(a: Path, b: Path) -> None:
    for name in ("seed0/weights.csv", "seed0/losses.csv", "seed0/metrics.json"):
        assert (a / name).read_text() == (b / name).read_text(), name
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["--steps", "150", "--set", "checkpoint_every=10"]
    assert toy(*args, out=tmp_path / "whole").returncode == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*LAUNCH, "run", "toy", "blobs", "--quiet", "--out", str(cut), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "seed0" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "metrics.json").exists(), "the run finished before it was killed"
    done = subprocess.run([*LAUNCH, "resume", str(cut), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed seed 0 at step" in (cut / "log.txt").read_text()
    same_run(tmp_path / "whole", cut)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    result = toy("--set", "pretrain.lr=1e25", "--set", "checkpoint_every=1", "--steps", "20", out=out)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss at step 2 (objective denoise = nan")
    assert "Traceback" not in result.stderr
    state = torch.load(out / "seed0" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["theta"].values())


def test_a_full_disk_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_state({"step": 1}, path)
    good = path.read_bytes()

    def full_disk(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(TapweightError, match="No space left on device.*previous file is kept"):
        checkpoint.save_state({"step": 2}, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """torchrun, gloo, 2 CPU processes: λ agrees with one process to 1e-6 (float32 α)."""
    single = toy(*SHARDABLE, out=tmp_path / "one")
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run([*launcher, *LAUNCH[1:], "run", "toy", "blobs", "--quiet", "--out",
                          str(tmp_path / "two"), *SHARDABLE], capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    import pandas as pd

    one = pd.read_csv(tmp_path / "one" / "seed0" / "weights.csv")
    two = pd.read_csv(tmp_path / "two" / "seed0" / "weights.csv")
    assert len(one) == len(two) == 6
    assert (one - two).abs().to_numpy().max() < 1e-6
    assert one["denoise"].iloc[-1] != 0.5  # λ moved, so the comparison means something
