"""How long the commands that only read take to answer: ``tapweight --help``, ``--version``,
``list``, ``plugins``, ``show RUN``, an argument error and an unknown domain or task.

Each runs ``repeats`` times in a fresh process (``python -m tapweight ...``, what the
``tapweight`` script runs) with every installed plugin loading, and is timed on the wall
clock and in CPU time (user + system: on a loaded machine the wall time grows with the
other jobs, the CPU time much less), output discarded; the processes run in a scratch
folder, so ``PYTHONPATH`` says which tapweight is timed (a checkout of an older commit
gives the "before" figures). ``show`` reads a run folder made there: a 100-step seed of
the first installed domain's first task (config.yaml, metrics.json, weights.csv,
losses.csv), or ``--run`` a real one.
``python -c "import torch"`` is timed beside them: it is what these commands must not do
(tests/test_watch.py checks that none imports torch, RDKit, transformers, pandas or
matplotlib; this measures what that buys).
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tapweight.config import RunConfig, to_yaml
from tapweight.plugin.manager import build_registry

#: (arguments, the exit code they must end with); RUN is the run folder
COMMANDS = ((("--help",), 0), (("--version",), 0), (("list", "tasks"), 0), (("list", "domains"), 0),
            (("plugins",), 0), (("show", "RUN"), 0), (("show", "RUN", "--config"), 0),
            (("run",), 2), (("run", "nosuchdomain", "task"), 2), (("show", "RUN", "--nosuchoption"), 2))
YARDSTICK = ("python -c 'import torch'", [sys.executable, "-c", "import torch"])


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _time(argv: list[str], code: int, cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process, which must end with exit ``code``."""
    start, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, text=True)
    elapsed = time.perf_counter() - start, _cpu() - cpu
    if done.returncode != code:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}, not {code}: {done.stderr[-500:]}")
    return elapsed


def fake_run(folder: Path, steps: int = 100) -> Path:
    """A finished one-seed run folder of the first installed domain's first task, its numbers
    drawn at random: what ``show`` reads."""
    registry = build_registry()
    tasks = [registry.tables["tasks"][key] for key in registry.names("tasks")]
    domain, task = (tasks[0].domain, tasks[0].name) if tasks else ("absent", "task")
    spec = registry.tables["domains"].get(domain)
    objectives = [n.split(".")[-1] for n in (spec.objectives if spec else ("a", "b"))]
    cfg = RunConfig(domain=domain, task=task, options=spec.options() if spec and spec.options else None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    result = {"val": 0.8, "test": 0.7, "best_epoch": 3}
    (folder / "metrics.json").write_text(json.dumps({"domain": domain, "task": task, "method": "tapweight",
                                                     "metric": "roc_auc", "seeds": {"0": result}}))
    seed = folder / "seed0"
    seed.mkdir(exist_ok=True)
    rng = random.Random(0)
    weights = [["step", *objectives]] + [[t, *[1 / len(objectives)] * len(objectives)] for t in range(1, steps + 1)]
    losses = [["step", "val_loss", "val_overconfidence", *(f"hypergrad_{k}" for k in objectives)]]
    losses += [[t, 1.0, rng.gauss(0, 1), *(rng.gauss(0, 1) for _ in objectives)] for t in range(1, steps + 1)]
    for name, rows in (("weights.csv", weights), ("losses.csv", losses)):
        (seed / name).write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    return folder


def run(repeats: int, run_dir: Path | None = None) -> dict:
    """Median and worst wall time, and median CPU time, of each command over ``repeats`` fresh processes."""
    with tempfile.TemporaryDirectory(prefix="tapweight-startup-") as scratch:
        cwd = Path(scratch)
        folder = Path(run_dir).resolve() if run_dir else fake_run(cwd / "run")
        jobs = [(f"tapweight {' '.join(args)}", [sys.executable, "-m", "tapweight",
                                                 *(str(folder) if a == "RUN" else a for a in args)], code)
                for args, code in COMMANDS]
        rows = []
        for name, argv, code in [*jobs, (*YARDSTICK, 0)]:
            wall, cpu = zip(*(_time(argv, code, cwd) for _ in range(repeats)))
            rows.append({"command": name, "median_s": statistics.median(wall), "max_s": max(wall),
                         "cpu_s": statistics.median(cpu), "repeats": repeats})
    return {"rows": rows, "run": str(run_dir) if run_dir else "a synthetic 100-step seed"}


def table(result: dict) -> str:
    lines = ["| command | median (s) | worst (s) | CPU, median (s) |", "|---|---:|---:|---:|"]
    lines += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['max_s']:.2f} | {r['cpu_s']:.2f} |"
              for r in result["rows"]]
    return "\n".join(lines)
