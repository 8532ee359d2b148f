"""What the hypergradient's extra forward could be made cheaper by (``python -m bench avenues``).

The default's floor is level I plus one no-grad forward of the level I batch through θ's
K objectives (the hypergradient's one-sided difference). With the molecular objectives that forward is three
backbone passes over the batch (clean images for the three MG heads and MIR's features,
jigsaw-shuffled ones for JPP, grid-masked ones for MCL). Timed here, in one process, the
candidates interleaved (order rotated each round), as multiples of one level I step (forward
and backward of all objectives, the plain step's work):

- ``engine``: the engine's own float32 no-grad evaluation of L(θ) (``Engine.losses``);
- ``3 passes`` / ``1 batched pass``: the backbone alone on three batches, or on the three
  concatenated (one call; what "one batched forward for all K objectives" would cost; its
  batch-norm statistics would then mix the three inputs, so it is not the same L);
- ``inference_mode``: the 3 passes under ``torch.inference_mode`` instead of ``no_grad``;
- ``bf16 autocast``: the 3 passes under CPU (or CUDA) bf16 autocast;
- ``compiled`` (``--compile``): the 3 passes through ``torch.compile`` of the backbone (its
  compile time apart, in the notes), or the reason it could not compile.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.workload import Workload
from tapweight.method.batches import to_device
from tapweight.method.engine import synchronize


def _timed(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def run(workload: Workload, repeats: int, compile_: bool = True) -> dict:
    device = workload.device
    engine = workload.build("default")
    engine.step()  # optimizer state exists, as in a steady-state step
    backbone = engine.theta.backbone
    batches = [(to_device(next(engine.corpus), device), 0)]
    images = batches[0][0]["image"]
    three = [images, images.flip(-1), images.flip(-2)]
    joined = torch.cat(three)
    params = [p.detach() for p in engine.theta_params]

    def level_one():
        engine.theta.zero_grad(set_to_none=True)
        engine.theta(batches[0][0]).sum().backward()

    def passes():
        for x in three:
            backbone(x)

    candidates = {
        "level I step (forward + backward)": level_one,
        "engine": lambda: engine.losses(batches, params, "float32"),
        "3 passes": lambda: torch.no_grad()(passes)(),
        "1 batched pass": lambda: torch.no_grad()(backbone)(joined),
        "inference_mode": lambda: torch.inference_mode()(passes)(),
        "bf16 autocast": lambda: torch.autocast(device.type, dtype=torch.bfloat16)(torch.no_grad()(passes))(),
    }
    notes = {}
    try:
        if not compile_:
            raise RuntimeError("not asked for (--compile)")
        compiled = torch.compile(backbone, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(images)
        notes["compile_s"] = time.perf_counter() - start

        def compiled_passes():
            for x in three:
                compiled(x)

        candidates["compiled"] = lambda: torch.no_grad()(compiled_passes)()
    except Exception as err:  # an inductor that cannot build here is a finding, not a failure
        notes["compiled"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    for fn in candidates.values():
        fn()  # warm-up
    names = list(candidates)
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(candidates[name], device))
    base = statistics.median(times[names[0]])
    rows = {name: {"median_s": statistics.median(t), "x_level_I": statistics.median(t) / base}
            for name, t in times.items()}
    return {"batch": len(images), "image_size": images.shape[-1], "rows": rows, "notes": notes}


def table(result: dict) -> str:
    lines = [f"level I batch {result['batch']}, {result['image_size']} px",
             "| what | median s | × level I step |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['median_s']:.3f} | {r['x_level_I']:.3f} |" for name, r in result["rows"].items()]
    lines += [f"note: {key}: {value}" for key, value in result["notes"].items()]
    return "\n".join(lines)
