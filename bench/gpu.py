"""One prepared GPU check (``python -m bench gpu``): everything the performance questions need,
in one run of ≤ 8 minutes on one H100/H200, writing one JSON (``gpu.json``), each part saved
as soon as it is done (a failing part records its error and the others go on).

1. ``machine``: GPU, memory, TF32 flags, torch, CPU cores.
2. ``step_bf16``: step time and peak memory at the paper shape (224 px, batch 1024/64/64) under
   bf16 autocast, per variant (``bench step``): plain, the default, each registered directional
   estimator, the jvp slices; ``--profile``'s time per level.
3. ``data``: molecules drawn into the image cache and loaded from it at 224 px by N DataLoader
   workers (``bench data``), and whether that keeps up with level I of the default.
4. ``betty_bf16``: Betty beside plain and the default (a part of its own: a failing Betty loses
   nothing else).
5. ``step_fp32``: the same in float32 (TF32 as torch sets it).
6. ``precision``: on one global step, the central difference with TF32 allowed and in full
   float32 against forward-mode jvp (relative error, cosine).
7. ``estimators``: the estimator study (``bench estimators``) on real BBBP images at the paper
   batch under bf16: each estimator's deviation from the exact one over the validation-batch
   variance, and what ``auto`` picks.
8. ``end_to_end``: ``tapweight run mol bbbp --preset paper --amp bf16 --steps 30`` with
   ``final.epochs=1``, then ``predict`` and ``export`` on its folder, then the run again
   under a 1-process ``torchrun`` (NCCL): exit codes, seconds, the last lines of failures.

``--device cpu`` runs every part at a tiny shape with the toy models and tiny run settings
(give ``--bbbp`` a slice of the file), gloo for torchrun (the tests do, so the script cannot
rot); the figures are then meaningless.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from bench import data, report, step
from bench.workload import SHAPES, Workload
from tapweight.method.estimators import classes
from tapweight.method.hypergrad import directional_fd, directional_jvp, softmax_vjp

ROOT = Path(__file__).resolve().parents[1]
BBBP = ROOT / ".." / "shared" / "data" / "moleculenet" / "bbbp.csv"
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
                    tf32_conv=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
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


def _command(args: list[str], timeout: float, cwd: Path) -> dict:
    """Run one command line; its exit code, seconds and, when it failed, its last output lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = None, f"timed out after {timeout:.0f} s\n{err.stdout or ''}{err.stderr or ''}"
    row = {"command": " ".join(args[2:] if args[:2] == [sys.executable, "-m"] else args), "exit_code": code,
           "seconds": time.perf_counter() - start}
    if code != 0:
        row["output_tail"] = str(output)[-3000:]
    print(f"   {row['command'][:100]}: exit {code}, {row['seconds']:.1f} s", flush=True)
    return row


def end_to_end(device: torch.device, out: Path, bbbp: Path, steps: int) -> dict:
    """A user's CUDA pass: run, predict, export, then the run under a 1-process torchrun."""
    cuda = device.type == "cuda"
    run_args = (["--preset", "paper", "--set", "amp=bf16"] if cuda
                else ["--preset", "cpu", *(a for s in TINY_RUN for a in ("--set", s))])
    common = ["run", "mol", "bbbp", "--data", str(bbbp), "--steps", str(steps), "--device", str(device),
              "--set", "final.epochs=1", *run_args, "--quiet"]
    tapweight = [sys.executable, "-m", "tapweight"]
    folder, launched = out / "e2e-run", out / "e2e-torchrun"
    rows = [_command([*tapweight, *common, "--out", str(folder)], 300, out)]
    if rows[0]["exit_code"] == 0:
        rows.append(_command([*tapweight, "predict", str(folder), "--data", str(bbbp), "--device", str(device),
                              "--out", str(out / "e2e-preds.csv")], 120, out))
        rows.append(_command([*tapweight, "export", str(folder), "--format", "torchvision"], 120, out))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    rows.append(_command([*torchrun, "-m", "tapweight", *common, "--steps", "5" if cuda else str(steps),
                          "--out", str(launched)], 300, out))
    backend = "nccl" if cuda else "gloo"
    return {"rows": rows, "backend": backend, "passed": all(r["exit_code"] == 0 for r in rows)}


def estimator_study(device: torch.device, bbbp: Path, steps: int, val_batches: int) -> dict:
    """``bench estimators`` on real BBBP images: at the paper batch under bf16 on CUDA; on the
    CPU at the tests' tiny settings."""
    from bench import estimators

    sets = PAPER_STUDY if device.type == "cuda" else TINY_RUN
    names = (*DIRECTIONAL, "fd-forward@0.01", "jvp-1/16")
    return estimators.run("mol", "bbbp", str(bbbp), steps, val_batches, sets, device, names)


def run(device: torch.device, out: Path, repeats: int = 5, warmup: int = 2, workers: int = 0,
        bbbp: Path = BBBP, study_steps: int = 12, run_steps: int = 30) -> dict:
    cpu = device.type != "cuda"
    shape, models = (SHAPES["tiny"], "toy") if cpu else (SHAPES["paper"], "mol")
    workers = workers or (1 if cpu else max(1, min(16, (os.cpu_count() or 2) - 2)))
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": "gpu", "device": str(device), "machine": machine(device), "seconds": {},
                    "errors": {}}

    def part(name: str, work) -> None:
        """Run one part; its figures, or its error, are saved before the next one starts."""
        start = time.perf_counter()
        print(f"-- {name}", flush=True)
        try:
            result[name] = work()
        except Exception as err:  # one failing part must not lose the others' figures
            result["errors"][name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"   failed: {traceback.format_exc()}", flush=True)
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
        measured = data.run(nci_smiles(), 8 if cpu else 4000, 32 if cpu else 224, 4 if cpu else 256, workers)
        print(report.data_table({"command": "data", **measured}), flush=True)
        need = result.get("step_bf16", {}).get("variants", {}).get("default", {}).get("pretrain_images_per_s")
        cached = max(r["images_per_s"] for r in measured["rows"] if "from the cache" in r["stage"])
        measured["keeps_up"] = {"level_I_images_per_s": need, "cached_load_images_per_s": cached,
                                "workers": workers, "keeps_up": None if need is None else cached >= need}
        print("   keeps up:", json.dumps(measured["keeps_up"]), flush=True)
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

    # the most wanted figures first: a run cut short keeps them
    part("step_bf16", lambda: steps("bf16", BF16_VARIANTS))
    part("precision", accuracy)
    part("estimators", study)
    part("end_to_end", lambda: end_to_end(device, out, bbbp, run_steps))
    part("data", pipeline)
    part("betty_bf16", lambda: steps("bf16", BETTY_VARIANTS))
    part("step_fp32", lambda: steps("no", FP32_VARIANTS))
    return result
