"""How exact the hypergradient is in each setting the config accepts (``python -m bench exactness``).

For every optimizer / precision / schedule / unroll and every registered estimator (and
``auto``), over several seeds of the small
non-quadratic problem of bench/problems/unrolled.py (tanh network with batch norm and dropout, three
objectives), the engine's ∂L_val/∂α is compared with autograd through the unrolled optimizer
steps (the tests' independent reference): worst relative error and worst cosine over seeds.
The tests assert the tolerances; this prints the measured values for docs/method.md.
"""

from __future__ import annotations

import torch

from bench.problems import unrolled
from bench.problems.quadratic import Problem
from tapweight.method.estimators import classes

#: name -> (inner optimizer, reweight keys, other config changes)
SETTINGS = {
    "SGD (momentum, weight decay)": ("sgd", {}, {}),
    "Adam": ("adam", {}, {}),
    "AdamW": ("adamw", {}, {}),
    "SGD, step schedule, scale=exact": ("sgd", {}, {"scheduler": "step"}),
    "SGD, warm-up schedule, scale=exact": ("sgd", {}, {"scheduler": "warmup"}),
    "SGD, unroll 2": ("sgd", {"unroll": 2}, {}),
    "SGD, unroll 5": ("sgd", {"unroll": 5}, {}),
    "SGD, bf16 autocast": ("sgd", {}, {"amp": "bf16"}),
    "Adam, bf16 autocast": ("adam", {}, {"amp": "bf16"}),
}


def _config(optimizer, reweight, other, method):
    """``method``: a ``reweight.hypergrad`` value."""
    cfg = unrolled.config(optimizer, hypergrad=method, **reweight)
    if "scheduler" in other:
        for level in (cfg.pretrain, cfg.finetune):
            level.scheduler, level.step_size, level.decay, level.warmup_steps = other["scheduler"], 2, 0.5, 4
    cfg.amp = other.get("amp", "no")
    return cfg


def _compare(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(relative error, cosine) of ``got`` against ``expected``."""
    got, expected = got.double(), expected.double()
    return (float((got - expected).norm() / expected.norm()),
            float(torch.nn.functional.cosine_similarity(got, expected, 0)))


def _errors(cfg, seed: int, dtype) -> tuple[float, float]:
    return _compare(*unrolled.hypergradients(cfg, 3, dtype, seed))


def _implicit(method: str) -> tuple[float, float]:
    """The implicit methods at the optimum of the quadratic problem, default settings."""
    problem, lam0, gamma = Problem(), [0.5, 0.3, 0.2], 0.3
    theta, heads = problem.optimum(torch.tensor(lam0, dtype=torch.float64))
    cfg = problem.config(hypergrad=method)
    cfg.pretrain.lr = cfg.finetune.lr = 0.0
    engine = problem.engine(cfg, lam0, theta=theta, h=heads, w=problem.w_star(theta, gamma))
    alpha0 = engine.alpha.detach().clone().double()
    engine.step()
    return _compare(engine.alpha.grad, problem.implicit_alpha_grad(alpha0, gamma))


def run(seeds: int = 5) -> list[dict]:
    rows = []
    for name, (optimizer, reweight, other) in SETTINGS.items():
        amp = other.get("amp", "no") != "no"
        # float64 where autocast is off; bf16 runs in float32 against a float32 reference
        dtype = torch.float32 if amp else torch.float64
        cfg = _config(optimizer, reweight, other, "auto")
        methods = [m for m, cls in classes().items() if not cls.needs_hessians and not cls.refuses(cfg)]
        for method in [*methods, "auto"]:
            errors = [_errors(_config(optimizer, reweight, other, method), seed, dtype) for seed in range(seeds)]
            rows.append({"setting": name, "method": method, "seeds": seeds,
                         "max_rel_error": max(e for e, _ in errors), "min_cosine": min(c for _, c in errors)})
    for method in (m for m, cls in classes().items() if cls.needs_hessians):
        error, cos = _implicit(method)
        rows.append({"setting": "quadratic at its optimum (implicit, defaults)", "method": method, "seeds": 1,
                     "max_rel_error": error, "min_cosine": cos})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| setting | method | seeds | max relative error | min cosine |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['method']} | {r['seeds']} | {r['max_rel_error']:.1e} | {r['min_cosine']:.7f} |"
              for r in rows]
    return "\n".join(lines)
