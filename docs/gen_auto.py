"""What ``reweight.hypergrad=auto`` picks, generated from the estimator registry: an MkDocs hook.

The method page carries the marker ``<!-- reference: auto -->``; while the site builds it is
replaced by a table of the settings that decide ``auto`` and the estimator that
``tapweight.method.estimators.choose`` returns for each, then every registered estimator with
its cost and the first line of its docstring. The choice is written nowhere else: other pages
link to this table (``tests/test_docs.py`` checks that no page states it on its own).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

MARKER = "<!-- reference: auto -->"
#: the settings ``auto`` reads, as (label, device, amp, TF32 on CUDA, unroll, hyper_fraction)
CASES = [
    ("CPU, float32, unroll 1", "cpu", "no", False, 1, 1.0),
    ("CPU, bf16 autocast, unroll 1", "cpu", "bf16", False, 1, 1.0),
    ("CUDA, float32 with TF32 off, unroll 1", "cuda", "no", False, 1, 1.0),
    ("CUDA, float32 with TF32 on (torch's default for convolutions), unroll 1", "cuda", "no", True, 1, 1.0),
    ("CUDA, bf16 or fp16 autocast, unroll 1", "cuda", "bf16", True, 1, 1.0),
    ("any device, `reweight.hyper_fraction` < 1, unroll 1", "cpu", "no", False, 1, 0.25),
    ("any device, `reweight.unroll` > 1 (SGD)", "cpu", "no", False, 5, 1.0),
]


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, auto_reference())
    return markdown


def picks() -> list[tuple[str, str, str]]:
    """(settings, estimator, why) for each of ``CASES``, as ``choose`` answers them."""
    import torch

    from tapweight.method import estimators
    from tapweight.method.models import fp32_mode

    rows = []
    for label, device, amp, with_tf32, unroll, fraction in CASES:
        cfg = SimpleNamespace(amp=amp, reweight=SimpleNamespace(hypergrad="auto", unroll=unroll,
                                                                hyper_fraction=fraction),
                              pretrain=SimpleNamespace(optimizer="sgd"), finetune=SimpleNamespace(optimizer="sgd"))
        with fp32_mode("tf32" if with_tf32 else "ieee"):
            answer = estimators.choose(cfg, torch.device(device) if device != "cpu" else None)
        name, why = answer if isinstance(answer, tuple) else (answer, "")
        rows.append((label, name, why))
    return rows


def auto_reference() -> str:
    from tapweight.method.estimators import classes

    rows = picks()
    out = ["| the run's settings | `auto` picks |" + (" why |" if any(r[2] for r in rows) else ""),
           "|---|---|" + ("---|" if any(r[2] for r in rows) else "")]
    out += [f"| {label} | `{name}` |" + (f" {why} |" if why else "") for label, name, why in rows]
    out += ["", "Every estimator `reweight.hypergrad` accepts (cost: extra forwards of the level I batch "
            "per inner step; exact: the error is rounding only):", "",
            "| estimator | cost | exact | what it computes |", "|---|---:|---|---|"]
    for name, cls in classes().items():
        text = " ".join((cls.__doc__ or "").split())
        doc = re.split(r"(?<=\.)\s", text)[0].replace("``", "`").replace("|", "\\|")  # its first sentence
        cost = "–" if cls.cost == float("inf") else f"{cls.cost:g}"
        out.append(f"| `{name}` | {cost} | {'yes' if getattr(cls, 'exact', False) else 'no'} | {doc} |")
    return "\n".join(out)
