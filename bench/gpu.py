"""One prepared GPU check (``python -m bench gpu``): everything the performance questions need,
in one run of a few minutes on one H100/H200, each part saved as soon as it is done.

1. The machine: GPU, driver-visible memory, torch, CPU cores.
2. Step time and peak memory at the paper shape (224 px, batch 1024/64/64) under bf16
   autocast: plain continued pretraining, the shipped default, the full central difference,
   the cheaper estimators and jvp (``bench step``).
3. The data pipeline at 224 px: molecules drawn into the image cache by N DataLoader workers and
   loaded from it by N DataLoader workers (``bench data``), and whether that keeps up with
   level I's images per second of the default.
4. Betty beside plain and the default, at the same shape (a part of its own).
5. Plain and the default at float32 (TF32 as torch sets it), so the bf16 gain is measured.
6. The hypergradient's precision on this GPU: on one global step at a small shape, the
   central difference with TF32 allowed (torch's default for convolutions) and in full
   float32 (what ``fd`` does), against forward-mode ``jvp``: relative error and cosine.

``--device cpu`` runs the same parts at a tiny shape with the toy models and without peak
memory (the tests do, so the script cannot rot); the figures are then meaningless.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import torch

from bench import data, report, step
from bench.workload import SHAPES, Workload
from tapweight.method.hypergrad import directional_fd, directional_jvp, softmax_vjp

PROFILE = Path("/tmp/tapweight-gpu-profiles")  # per-level times go to gpu.json; the tables stay here
BF16_VARIANTS = ["plain", "default", "fd", "fd-1/8", "jvp", "jvp-1/4", "jvp-1/8", "jvp-1/16"]
BETTY_VARIANTS = ["plain", "default", "betty"]  # a part of its own: a failing Betty loses nothing else
FP32_VARIANTS = ["plain", "default"]


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
    """fd with TF32 allowed, fd in full float32, against jvp, on one global step."""
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
    direction = list(problem.u[:nb]) + [None] * (len(inner.theta) - nb)
    lam = engine.lam

    def alpha(g):
        return softmax_vjp(lam, g.cpu().double())

    batches, radius = inner.losses.args[0], engine.cfg.reweight.fd_radius
    exact = alpha(directional_jvp(lambda ps: engine.losses(batches, ps, True), inner.theta, direction))
    out = {}
    # exact=False under amp "no" is float32 with torch's TF32 defaults (convolutions: on)
    for name, exact_digits in (("fd, TF32 allowed", False), ("fd, full float32", True)):
        got = alpha(directional_fd(lambda ps, e=exact_digits: engine.losses(batches, ps, e), inner.theta,
                                   direction, radius))
        out[name] = {"relative_error": float((got - exact).norm() / exact.norm()),
                     "cosine": float(torch.nn.functional.cosine_similarity(got, exact, 0))}
    return out


def run(device: torch.device, out: Path, repeats: int = 5, warmup: int = 2, workers: int = 0) -> dict:
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
        measured["targets"] = report.targets(measured["variants"])
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

    # the most wanted figures first: a run cut short keeps them
    part("step_bf16", lambda: steps("bf16", BF16_VARIANTS))
    part("data", pipeline)
    part("betty_bf16", lambda: steps("bf16", BETTY_VARIANTS))
    part("step_fp32", lambda: steps("no", FP32_VARIANTS))
    part("precision", accuracy)
    return result
