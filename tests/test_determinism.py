"""The same run twice on one machine (same threads) gives the same bytes: the claim of the
first row of docs/reproducibility.md. Two fresh processes, started together (so they also
compete for the cores), run the toy domain's short run; every file of the two run folders is
compared, except ``log.txt``, whose lines carry the wall-clock time and the folder's name.
"""

import subprocess
import sys
from pathlib import Path

LAUNCH = [sys.executable, str(Path(__file__).with_name("launch_toy.py"))]
#: the files a reader compares; the test also checks that no other file differs
RESULTS = ("metrics.json", "seed0/metrics.json", "seed0/weights.csv", "seed0/losses.csv",
           "seed0/hypergrad.csv", "seed0/predictions.csv")
CLOCKED = {"log.txt"}


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_same_run_twice_gives_byte_identical_files(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([*LAUNCH, "run", "toy", "blobs", "--quiet", "--seeds", "0", "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for out in runs]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    a, b = runs
    assert files(a) == files(b) and set(RESULTS) <= files(a)
    for name in sorted(files(a) - CLOCKED):  # checkpoint, safetensors, plots and config included
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
