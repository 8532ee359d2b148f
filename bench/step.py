"""Step timing and peak memory of each variant (``python -m bench step``).

Timing: every variant's engine is built up front in this one process; each runs ``warmup``
untimed steps, then ``repeats`` rounds time one global step of every variant, the order
rotated each round so that no variant always follows the same one (caches, clocks, other
load on the machine hit all alike). Reported: the median and the ratio of medians to the
plain continued-pretraining step. On CUDA each timed step is bracketed by synchronisations.

Peak memory, of a steady-state step (after one warm-up step, so optimizer state exists):
- CUDA: in this process, each variant alone on the device (the others not built yet):
  ``torch.cuda.max_memory_allocated`` minus what was allocated before the variant was built.
  So it counts the variant's models, gradients, optimizer state and the step's transients,
  not the shared synthetic data.
- CPU: the process-wide resident set cannot be attributed to one of several live engines,
  and freed heap is often kept by the allocator (a later variant would look free), so each
  variant runs in a fresh subprocess (``bench _memory``): its peak RSS (Linux VmHWM, reset
  after the data and master models are built; ``ru_maxrss`` where that reset is not allowed)
  minus its RSS at that point.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.workload import Workload
from tapweight.errors import TapweightError
from tapweight.method.engine import synchronize

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def collect_warnings(notes: dict[str, list[str]], current: Callable[[], str]):
    """Record tapweight's warnings (a diverging Neumann series, CG stopping early...) per variant."""

    class Handler(logging.Handler):
        def emit(self, record):
            notes.setdefault(current(), []).append(record.getMessage())

    handler = Handler(logging.WARNING)
    logger = logging.getLogger("tapweight")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def build_engines(workload: Workload, variants: list[str], notes: dict[str, list[str]]) -> dict:
    """One engine per variant; a variant that cannot be built (Betty absent) gets a note instead."""
    engines = {}
    for name in variants:
        try:
            engines[name] = workload.build(name)
        except TapweightError as err:
            notes.setdefault(name, []).append(f"skipped: {err}")
    return engines


def time_steps(engines: dict, warmup: int, repeats: int, device: torch.device,
               running: list[str]) -> dict[str, list[float]]:
    """Seconds per global step of each engine, interleaved as the module docstring says."""
    order = list(engines)
    for name in order:
        running[0] = name
        for _ in range(warmup):
            engines[name].step()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in order}
    for r in range(repeats):
        shift = r % len(order)
        for name in order[shift:] + order[:shift]:
            running[0] = name
            synchronize(device)
            start = time.perf_counter()
            engines[name].step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def cuda_peak(workload: Workload, variant: str, device: torch.device) -> int:
    """Peak bytes of one steady-state step of ``variant``, alone on the device."""
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    engine = workload.build(variant)
    engine.step()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    engine.step()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def _peak_rss(reset: bool) -> int:
    if reset:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def memory_child(workload: Workload, variant: str) -> dict:
    """In a fresh process: peak RSS growth of building ``variant`` and running two steps."""
    base = _rss()
    reset = _reset_peak_rss()
    engine = workload.build(variant)
    engine.step()
    engine.step()
    return {"variant": variant, "peak_bytes": _peak_rss(reset) - base,
            "method": "VmHWM reset" if reset else "ru_maxrss"}


def cpu_peak(variant: str, child_args: list[str]) -> int:
    """Run `memory_child` for ``variant`` in a subprocess; its peak RSS growth in bytes."""
    cmd = [sys.executable, "-m", "bench", "_memory", "--variant", variant, *child_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise RuntimeError(f"memory run of {variant} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def profile_step(engine, device: torch.device, path: Path, steps: int = 3, rows: int = 25) -> dict[str, float]:
    """Where a global step's time goes: mean seconds per step of the whole step and of each
    level (``Engine.phase_times``: the engine's ``_phase`` ranges, the device synchronised
    at each level's ends; only the whole step for the Betty engine) over ``steps`` steps;
    then one step under ``torch.profiler``, whose top events by total and by self time go
    to ``path``."""
    per_level = hasattr(engine, "phase_times")
    if per_level:
        engine.phase_times = {}
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    synchronize(device)
    phases = {"step": (time.perf_counter() - start) / steps}
    if per_level:
        phases.update({name: total / steps for name, total in engine.phase_times.items()})
        engine.phase_times = None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        engine.step()
        synchronize(device)
    device_time = "cuda" if device.type == "cuda" else "cpu"
    events = prof.key_averages()
    path.write_text("\n\n".join(
        f"one global step, top {rows} by {title}\n" + events.table(sort_by=key, row_limit=rows)
        for title, key in (("total time (the engine's tapweight.* ranges, then what they call)",
                            f"{device_time}_time_total"),
                           ("self time (the operators themselves)", f"self_{device_time}_time_total"))))
    return phases


def run(workload: Workload, variants: list[str], warmup: int, repeats: int, memory: bool,
        child_args: list[str], profile: Path | None = None, profile_steps: int = 3) -> dict:
    """The whole step benchmark; returns the numbers (report.py prints and saves them)."""
    device = workload.device
    notes: dict[str, list[str]] = {}
    running = ["setup"]
    load_before = os.getloadavg()
    with collect_warnings(notes, lambda: running[0]):
        peaks: dict[str, int] = {}
        if memory and device.type == "cuda":
            for name in variants:
                running[0] = name
                with contextlib.suppress(TapweightError):  # noted when the timing pass builds it
                    peaks[name] = cuda_peak(workload, name, device)
        engines = build_engines(workload, variants, notes)
        if memory and device.type != "cuda":
            peaks = {name: cpu_peak(name, child_args) for name in engines}
        times = time_steps(engines, warmup, repeats, device, running)
        phases = {}
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            for name, engine in engines.items():
                running[0] = name
                table = profile / f"profile_{name.replace('/', '_')}.txt"
                phases[name] = profile_step(engine, device, table, profile_steps)
    results = {}
    image_time = statistics.median(times["plain"]) if "plain" in times else None
    for name in variants:
        entry: dict = {"notes": notes.get(name, [])}
        plain = "gcn-plain" if name.startswith("gcn-") else "plain"  # each backbone's own baseline
        base_time = statistics.median(times[plain]) if plain in times else None
        base_peak = peaks.get(plain)
        if name in times:
            median = statistics.median(times[name])
            entry.update(times_s=times[name], median_s=median,
                         ratio=median / base_time if base_time else None,
                         # what a run pays on average: a variant whose steps differ (every-k)
                         mean_ratio=statistics.mean(times[name]) / statistics.mean(times["plain"])
                         if base_time else None,
                         pretrain_images_per_s=workload.shape.pretrain_batch / median)
            if name.startswith("gcn-") and image_time:
                entry["vs_image_plain"] = median / image_time
        if name in phases:
            entry["phases_s"] = phases[name]
        if name in peaks:
            entry.update(peak_bytes=peaks[name],
                         peak_ratio=peaks[name] / base_peak if base_peak else None)
        results[name] = entry
    return {"variants": results, "load_average": {"before": load_before, "after": os.getloadavg()},
            "memory_method": ("cuda max_memory_allocated, each variant alone" if device.type == "cuda"
                              else "peak RSS growth, each variant in a fresh subprocess")
            if memory else None}
