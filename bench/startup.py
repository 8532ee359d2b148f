"""How long the quick commands take to answer: ``tapweight --help``, ``--version``, ``list``,
``plugins``.

Each runs ``repeats`` times in a fresh process (``python -m tapweight ...``, what the
``tapweight`` script runs) with every installed plugin loading, and is timed on the wall
clock, output discarded. ``python -c "import torch"`` is timed beside them: it is what a
quick command must not do (tests/test_watch.py checks that none imports torch, RDKit,
transformers, pandas or matplotlib; this measures what that buys).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

COMMANDS = (("--help",), ("--version",), ("list", "tasks"), ("list", "domains"), ("plugins",))
YARDSTICK = ("python -c 'import torch'", [sys.executable, "-c", "import torch"])


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def run(repeats: int) -> dict:
    """Median and worst wall time of each command over ``repeats`` fresh processes."""
    jobs = [(f"tapweight {' '.join(args)}", [sys.executable, "-m", "tapweight", *args]) for args in COMMANDS]
    rows = []
    for name, argv in [*jobs, YARDSTICK]:
        times = [_time(argv) for _ in range(repeats)]
        rows.append({"command": name, "median_s": statistics.median(times), "max_s": max(times),
                     "repeats": repeats})
    return {"rows": rows}


def table(result: dict) -> str:
    lines = ["| command | median (s) | worst (s) |", "|---|---:|---:|"]
    lines += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['max_s']:.2f} |" for r in result["rows"]]
    return "\n".join(lines)
