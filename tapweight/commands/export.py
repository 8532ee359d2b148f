"""``tapweight export RUN --format NAME``: a run's encoder in a format another library loads.

By default the continued-pretrained encoder (``seed<k>/backbone.safetensors``, the final θ
backbone, which is what TapWeight produces for other tasks); with ``finetuned=True`` the
final fine-tuned model's backbone and task head (``model.safetensors``). The formats are the
domain's (``Domain.exports``): e.g. ``hf`` for text (a Hugging Face model folder with its
tokenizer), ``torchvision`` and ``imagemol`` for molecules. ``seed`` picks the seed (default:
the first with a saved model); the files go to ``out`` (default
``RUN/export/<format>-seed<k>[-finetuned]``), which must be new or empty.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tapweight.errors import TapweightError
from tapweight.job.runner import run_job
from tapweight.job.saved import (
    BACKBONE_FILE,
    PREDICTOR_DIR,
    load_final,
    load_predictor,
    load_weights,
    pick_seeds,
)


def export(run: str | Path, format: str, out: str | Path | None = None, seed: int | None = None,
           finetuned: bool = False) -> list[Path]:
    """Write the run's encoder (or fine-tuned model) in ``format``; return the files written."""
    run = Path(run)
    job = run_job(run)
    formats = {f.name: f for f in job.domain.exports}
    if format not in formats:
        have = ", ".join(sorted(formats)) or "none"
        raise TapweightError(f"domain '{job.domain.name}' has no export format '{format}' (formats: {have})")
    k = pick_seeds(job, run, seed)[0]
    folder = run / f"seed{k}"
    target = Path(out) if out else run / "export" / f"{format}-seed{k}{'-finetuned' if finetuned else ''}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TapweightError(f"--out '{target}' exists and is not an empty folder: pick another --out")
    if finetuned:
        model = load_final(job, run, k).model
        backbone, head = model.backbone, model.head
    else:
        file = folder / BACKBONE_FILE
        if not file.is_file():
            raise TapweightError(f"{file} does not exist: method '{job.cfg.method}' did not continue "
                                 "pretraining; export the fine-tuned model with --finetuned")
        backbone, head = load_predictor(job, replace(job.cfg, seed=k), folder).backbone(), None
        load_weights(backbone, file, f"the continued-pretrained backbone of seed {k}")
    target.mkdir(parents=True, exist_ok=True)
    backbone.eval()
    if head is not None:
        head.eval()
    return formats[format].write(backbone, head, folder / PREDICTOR_DIR, target)
