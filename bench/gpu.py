"""One prepared GPU check (``python -m bench gpu``, or ``bash bench/gpu.sh`` on a lent machine):
what the performance and correctness questions need, within ``--budget-s`` (default 480 s) on
one H100/H200 (80 GB), writing one JSON (``gpu.json``), each part saved as soon as it is done.
A failing part records its error and the others go on; a part that would not finish within
the budget is stopped (or not started) and recorded under ``skipped``. Parts, most wanted first:

1. ``machine``: GPU, memory, TF32 settings (``fp32_precision``), torch, CPU cores.
2. ``nccl``: a run's collectives on a real process group (``bench/collectives.py`` under
   ``torchrun``: one process, and two where two GPUs exist): backends, results, and the
   average of roberta-base's u in one flat buffer against one all-reduce per tensor.
3. ``nlp_jvp``: the NLP hypergradient with ``jvp`` (and ``neumann``) through RoBERTa's attention
   on CUDA, at roberta-base's shape (random weights: none can be downloaded) on SST-2.
4. ``end_to_end``: ``tapweight run mol bbbp --preset paper --amp bf16 --steps 30`` with
   ``final.epochs=1``, then ``predict`` and ``export`` on its folder, then the run again
   under ``torchrun`` (NCCL): one process, and two where two GPUs exist.
5. ``data``: the corpus batches a paper-preset run gets (its workers, pinned memory, the copy
   to the GPU as level I makes it), and molecules drawn into the image cache and loaded from
   it by N workers (``bench data``); whether that keeps up with level I of the default.
6. ``step_bf16``: step time and peak memory at the paper shape (224 px, batch 1024/64/64) under
   bf16 autocast, per variant (``bench step``): plain, the default, each registered directional
   estimator, the jvp slices; ``--profile``'s time per level.
7. ``precision``: on one global step, the central difference with TF32 allowed and in full
   float32 against forward-mode jvp (relative error, cosine).
8. ``estimators``: the estimator study (``bench estimators``) on real BBBP images at the paper
   batch under bf16.
9. ``betty_bf16``: Betty beside plain and the default.
10. ``step_fp32``: the same as 6 in float32 (TF32 as torch sets it).

``--device cpu`` runs every part at a tiny shape with the toy models and tiny run settings
(give ``--bbbp`` a slice of the file), gloo for torchrun (the tests do, so the script cannot
rot); the figures are then meaningless.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from bench import data, report, step
from bench.workload import SHAPES, Workload
from tapweight.method.batches import to_device
from tapweight.method.estimators import classes
from tapweight.method.hypergrad import directional_fd, directional_jvp, softmax_vjp
from tapweight.method.models import fp32_precision

ROOT = Path(__file__).resolve().parents[1]
BBBP = ROOT / ".." / "shared" / "data" / "moleculenet" / "bbbp.csv"
SST2 = ROOT / ".." / "shared" / "data" / "text" / "sst2"
PROFILE = Path("/tmp/tapweight-gpu-profiles")  # per-level times go to gpu.json; the tables stay here
DIRECTIONAL = [name for name, cls in classes().items() if not cls.needs_hessians]
BF16_VARIANTS = ["plain", "default", *DIRECTIONAL, "jvp-1/8", "jvp-1/16"]
BETTY_VARIANTS = ["plain", "default", "betty"]
FP32_VARIANTS = ["plain", "default", *DIRECTIONAL]
#: tapweight run's settings on the CPU (tiny, the tests'); on CUDA the paper preset as it is
TINY_RUN = ["pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8", "final.batch_size=16",
            "mol.image_size=32", "mol.mir_size=16", "mol.render_workers=1", "split=random"]
PAPER_STUDY = ["pretrain.batch_size=1024", "finetune.batch_size=64", "reweight.batch_size=64",
               "mol.image_size=224", "amp=bf16"]


def nci_smiles() -> Path:
    """RDKit's bundled NCI sample (5,000 real molecules): on every machine with RDKit."""
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def machine(device: torch.device) -> dict:
    info = report.machine(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_gib=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count,
                    fp32_precision_conv=fp32_precision("conv"), fp32_precision_matmul=fp32_precision("matmul"))
    return info


def precision(device: torch.device, models: str, shape) -> dict:
    """fd with TF32 allowed, fd in full float32, against jvp, on one global step.

    On the H200 this part failed with "Expected all tensors to be on the same device": λ
    (``engine.lam``, on the GPU) met the hypergradient moved to the CPU in ``softmax_vjp``.
    Everything compared here is moved to the CPU explicitly."""
    workload = Workload(shape, device, "no", 1, models)
    engine = workload.build("fd")
    captured = {}
    method = engine.hypergrad

    def capture(problem, hvps=None):
        captured["problem"] = problem
        return method(problem, hvps)

    capture.needs_hessians = False
    engine.hypergrad = capture
    engine.step()
    problem = captured["problem"]
    (inner,) = problem.steps
    nb = problem.n_backbone
    inner = inner.pretrain
    direction = list(problem.u[:nb]) + [None] * (len(inner.theta) - nb)
    lam = engine.lam.cpu()

    def alpha(g):
        return softmax_vjp(lam, g.cpu().double())

    batches, radius = inner.batches, engine.cfg.reweight.fd_radius
    exact = alpha(directional_jvp(lambda ps: engine.losses(batches, ps, "float32"), inner.theta, direction))
    out = {}
    for name, arithmetic in (("fd, TF32 allowed", "tf32"), ("fd, full float32", "float32")):
        got = alpha(directional_fd(lambda ps, a=arithmetic: engine.losses(batches, ps, a), inner.theta,
                                   direction, radius))
        out[name] = {"relative_error": float((got - exact).norm() / exact.norm()),
                     "cosine": float(torch.nn.functional.cosine_similarity(got, exact, 0))}
    return out


class OutOfTime(Exception):
    """The budget ran out inside a part."""


class Budget:
    """Seconds left of ``--budget-s``; `limit` stops a block when they run out."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def limit(self):
        """Raise `OutOfTime` in the main thread when the budget is spent (SIGALRM)."""
        def stop(signum, frame):
            raise OutOfTime(f"the budget ran out ({self.left():.0f} s left)")

        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.01))

    @staticmethod
    def release() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _command(args: list[str], timeout: float, cwd: Path) -> dict:
    """Run one command line; its exit code, seconds and, when it failed, its last output lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=max(timeout, 1))
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = None, f"timed out after {timeout:.0f} s\n{err.stdout or ''}{err.stderr or ''}"
    row = {"command": " ".join(args[2:] if args[:2] == [sys.executable, "-m"] else args), "exit_code": code,
           "seconds": time.perf_counter() - start}
    print(f"   {row['command'][:100]}: exit {code}, {row['seconds']:.1f} s", flush=True)
    if code != 0:
        row["output_tail"] = str(output)[-3000:]
        print("\n".join(row["output_tail"].splitlines()[-15:]), flush=True)
    return row


def process_counts(device: torch.device) -> list[int]:
    """How many processes torchrun starts: one, and two where two GPUs exist."""
    return [1, 2] if device.type == "cuda" and torch.cuda.device_count() >= 2 else [1]


def torchrun(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def nccl(device: torch.device, out: Path, budget: Budget) -> dict:
    """``bench/collectives.py`` under torchrun for each process count: its JSON, or the failure."""
    result = {}
    for n in process_counts(device) if device.type == "cuda" else [2]:  # gloo: two CPU processes
        saved = out / f"collectives-{n}.json"
        saved.unlink(missing_ok=True)
        row = _command([*torchrun(n), str(ROOT / "bench" / "collectives.py"), str(saved)],
                       min(180, budget.left()), out)
        result[f"{n} process(es)"] = json.loads(saved.read_text()) if row["exit_code"] == 0 else row
    result["passed"] = all(r.get("mean_") and r.get("max_") and r.get("broadcast") for r in result.values())
    return result


def nlp_hypergradient(device: torch.device, sst2: Path, steps: int) -> dict:
    """The NLP hypergradient through RoBERTa's attention on ``device``: ``jvp`` and ``neumann``
    (forward mode, double backward) at roberta-base's shape on CUDA (random weights, SST-2),
    the tests' one-layer model on the CPU: step seconds, peak memory, finite values, and
    jvp's cosine with a central difference in full float32 on the same first step."""
    import dataclasses

    from bench.estimators import build
    from tapweight.job import runner

    base = ["nlp.model=tiny", "nlp.tiny_vocab_size=8000", "nlp.tiny_hidden_size=768", "nlp.tiny_layers=12",
            "nlp.tiny_heads=12", "nlp.max_length=128", "nlp.max_train=2000", "nlp.max_val=256"]
    tiny = ["nlp.model=tiny", "nlp.tiny_vocab_size=600", "nlp.tiny_hidden_size=32", "nlp.tiny_layers=1",
            "nlp.tiny_heads=2", "nlp.max_length=32", "nlp.max_train=200", "nlp.max_val=64"]
    sets = [*(base if device.type == "cuda" else tiny), "method=tapweight"]
    job = runner.resolve("nlp", "sst2", "paper", options={"data": str(sst2)}, sets=sets)
    table = job.registry.get("datasets", job.task.dataset, "nlp").load(job.cfg)
    result = {"sets": sets}
    for name in ("jvp", "neumann"):
        cfg = dataclasses.replace(job.cfg, reweight=dataclasses.replace(job.cfg.reweight, hypergrad=name))
        _, engine = build(job, cfg, table, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, values = [], []
        for _ in range(steps):
            start = time.perf_counter()
            record = engine.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            values += [v for k, v in record.items() if k.startswith("hypergrad")]
        result[name] = {"step_seconds": times, "hypergradients": values,
                        "finite": bool(values) and all(map(math.isfinite, values)),
                        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda" else None}
        del engine
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def end_to_end(device: torch.device, out: Path, bbbp: Path, steps: int, budget: Budget) -> dict:
    """A user's CUDA pass: run, predict, export, then the run under torchrun (one process, and
    two where two GPUs exist)."""
    cuda = device.type == "cuda"
    run_args = (["--preset", "paper", "--set", "amp=bf16"] if cuda
                else ["--preset", "cpu", *(a for s in TINY_RUN for a in ("--set", s))])
    common = ["run", "mol", "bbbp", "--data", str(bbbp), "--steps", str(steps), "--device", str(device),
              "--set", "final.epochs=1", *run_args, "--quiet"]
    tapweight = [sys.executable, "-m", "tapweight"]
    folder = out / "e2e-run"
    rows = [_command([*tapweight, *common, "--out", str(folder)], min(300, budget.left()), out)]
    if rows[0]["exit_code"] == 0:
        rows.append(_command([*tapweight, "predict", str(folder), "--data", str(bbbp), "--device", str(device),
                              "--out", str(out / "e2e-preds.csv")], min(120, budget.left()), out))
        rows.append(_command([*tapweight, "export", str(folder), "--format", "torchvision"],
                             min(120, budget.left()), out))
    for n in process_counts(device):
        # the device is each rank's own under torchrun (cuda:LOCAL_RANK)
        launched = [a if a != str(device) else device.type for a in common]
        rows.append(_command([*torchrun(n), "-m", "tapweight", *launched, "--steps", "5" if cuda else str(steps),
                              "--out", str(out / f"e2e-torchrun-{n}")], min(300, budget.left()), out))
    backend = "nccl" if cuda else "gloo"
    return {"rows": rows, "backend": backend, "passed": all(r["exit_code"] == 0 for r in rows)}


def run_pipeline(device: torch.device, bbbp: Path, batches: int) -> dict:
    """The corpus batches a run gets: the engine's own stream (the preset's workers, pinned
    memory on CUDA) and level I's copy to the device, in images per second, for its first
    epoch (images drawn into the cache) and the batches after it."""
    from bench.estimators import build
    from tapweight.job import runner
    from tapweight.method.engine import synchronize

    preset, sets = ("paper", ["amp=bf16"]) if device.type == "cuda" else ("cpu", TINY_RUN)
    job = runner.resolve("mol", "bbbp", preset, options={"data": str(bbbp)}, sets=[*sets, "method=tapweight"])
    table = job.registry.get("datasets", job.task.dataset, "mol").load(job.cfg)
    _, engine = build(job, job.cfg, table, device)
    stream, rows = engine.corpus, []
    for label, n in (("first epoch (draw + cache)", stream.per_epoch), ("cached", batches)):
        images, start = n * stream.batch_size, time.perf_counter()  # one process: the whole batch
        for _ in range(n):
            to_device(next(stream), device)
            synchronize(device)
        rows.append({"batches": label, "images": images, "images_per_s": images / (time.perf_counter() - start)})
    return {"preset": preset, "num_workers": stream.num_workers, "pin_memory": stream.pin_memory,
            "batch_size": stream.batch_size, "rows": rows}


def estimator_study(device: torch.device, bbbp: Path, steps: int, val_batches: int) -> dict:
    """``bench estimators`` on real BBBP images: at the paper batch under bf16 on CUDA; on the
    CPU at the tests' tiny settings."""
    from bench import estimators

    sets = PAPER_STUDY if device.type == "cuda" else TINY_RUN
    names = (*DIRECTIONAL, "fd-forward@0.01", "jvp-1/16")
    return estimators.run("mol", "bbbp", str(bbbp), steps, val_batches, sets, device, names)


def run(device: torch.device, out: Path, repeats: int = 5, warmup: int = 2, workers: int = 0,
        bbbp: Path = BBBP, study_steps: int = 12, run_steps: int = 30, budget_s: float = 480,
        sst2: Path = SST2) -> dict:
    budget = Budget(budget_s)
    cpu = device.type != "cuda"
    shape, models = (SHAPES["tiny"], "toy") if cpu else (SHAPES["paper"], "mol")
    workers = workers or (1 if cpu else max(1, min(16, (os.cpu_count() or 2) - 2)))
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": "gpu", "device": str(device), "budget_s": budget_s, "machine": machine(device),
                    "seconds": {}, "errors": {}, "skipped": {}}

    def part(name: str, needs: float, work) -> None:
        """Run one part if ``needs`` seconds are left; its figures, or its error, are saved
        before the next one starts."""
        if budget.left() < needs:
            result["skipped"][name] = f"{budget.left():.0f} s left, it needs about {needs:.0f} s"
            print(f"-- {name}: skipped ({result['skipped'][name]})", flush=True)
            report.write_json(result, out / "gpu.json")
            return
        start = time.perf_counter()
        print(f"-- {name}", flush=True)
        try:
            budget.limit()
            result[name] = work()
        except Exception as err:  # one failing part must not lose the others' figures
            result["errors"][name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"   failed: {traceback.format_exc()}", flush=True)
        finally:
            budget.release()
        result["seconds"][name] = time.perf_counter() - start
        report.write_json(result, out / "gpu.json")

    def steps(amp: str, variants: list[str]) -> dict:
        workload = Workload(shape, device, amp, 1, models)
        child = ["--shape", shape.name, "--device", str(device), "--amp", amp, "--accumulate", "1",
                 "--models", models, "--threads", "0"]
        # peak memory on CUDA only: on the CPU each variant would need a subprocess of its own
        measured = step.run(workload, variants, warmup, repeats, not cpu, child, PROFILE, 2)
        measured["targets"] = report.targets(measured["variants"], str(device))
        print(report.step_table({"variants": measured["variants"], "targets": measured["targets"],
                                 "load_average": measured["load_average"]}), flush=True)
        return {"shape": vars(shape), "amp": amp, "models": workload.source, **measured}

    def pipeline() -> dict:
        measured = {"run": run_pipeline(device, bbbp, 2 if cpu else 6)}
        print("   the run's corpus batches:", json.dumps(measured["run"]), flush=True)
        measured.update(data.run(nci_smiles(), 8 if cpu else 4000, 32 if cpu else 224, 4 if cpu else 256, workers))
        print(report.data_table({"command": "data", **measured}), flush=True)
        return measured

    def accuracy() -> dict:
        measured = precision(device, models, SHAPES["tiny"] if cpu else SHAPES["cpu"])
        print("  ", json.dumps(measured), flush=True)
        return measured

    def study() -> dict:
        from bench import estimators

        measured = estimator_study(device, bbbp, study_steps, 2 if cpu else 3)
        print(estimators.table(measured), flush=True)
        return measured

    # the most wanted figures first, each with the least time it takes (the H200 run's for
    # step_bf16 83 s, betty_bf16 34 s, step_fp32 20 s, data 16 s; a guess for the others): a
    # part that cannot finish in what is left is not started
    part("nccl", 20, lambda: nccl(device, out, budget))
    part("nlp_jvp", 20, lambda: nlp_hypergradient(device, sst2, 1 if cpu else 3))
    part("end_to_end", 60, lambda: end_to_end(device, out, bbbp, run_steps, budget))
    part("data", 20, pipeline)
    part("step_bf16", 90, lambda: steps("bf16", BF16_VARIANTS))
    part("precision", 5, accuracy)
    part("estimators", 60, study)
    part("betty_bf16", 40, lambda: steps("bf16", BETTY_VARIANTS))
    part("step_fp32", 25, lambda: steps("no", FP32_VARIANTS))
    need = result.get("step_bf16", {}).get("variants", {}).get("default", {}).get("pretrain_images_per_s")
    if "data" in result:
        got = min(r["images_per_s"] for r in result["data"]["run"]["rows"] if r["batches"] == "cached")
        result["data"]["keeps_up"] = {"level_I_images_per_s": need, "run_images_per_s": got,
                                      "keeps_up": None if need is None else got >= need}
        report.write_json(result, out / "gpu.json")
    return result
