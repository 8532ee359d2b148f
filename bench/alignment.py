"""How each objective's gradient lines up with the validation gradient over a run
(``python -m bench alignment DOMAIN TASK``).

With one inner step per λ step the hypergradient of λ_k is −2γ·η₁η₂·⟨∇_θ L_k(θ), P ⊙ u_b⟩
(docs/method.md). When it fades, one of three things happened: the objective's
gradient shrank, the validation gradient u_b shrank, or the two turned orthogonal. This
runs the task's engine (``cpu`` preset and ``--set`` overrides, the method ``tapweight``)
and records at each global step ‖u_b‖, ‖∇_θ L_k‖ on the backbone at the step's θ, their
cosine, and the engine's hypergradient, per objective. The cosine is of the gradients
themselves; the hypergradient weights u_b by the preconditioner P where it is not 1 (Adam
with ``reweight.preconditioner=exact``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench.estimators import build
from tapweight.job import runner
from tapweight.job.seed import objective_names


def _norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors if t is not None))


class Recorder:
    """Stands in for the engine's hypergradient, records the norms and cosines, and returns
    the engine's own estimate (so the run is the run ``tapweight run`` makes)."""

    def __init__(self, engine):
        self.hypergrad, self.rows = engine.hypergrad, []
        self.needs_hessians = self.hypergrad.needs_hessians

    def __call__(self, problem, hvps=None):
        step, nb = problem.steps[-1], problem.n_backbone
        u_b = [u.double() for u in problem.u[:nb]]
        u_norm = _norm(u_b)
        params = [p.detach().requires_grad_(True) for p in step.pretrain.theta]
        losses = step.pretrain.evaluate(params, True)
        norms, cosines = [], []
        for k in range(len(losses)):
            grads = torch.autograd.grad(losses[k], params[:nb], retain_graph=True, allow_unused=True)
            dot = sum((g.double() * u).sum() for g, u in zip(grads, u_b) if g is not None)
            norm = _norm(grads)
            norms.append(float(norm))
            cosines.append(float(dot / (norm * u_norm)))
        g_lam = self.hypergrad(problem, hvps)
        self.rows.append({"u_b": float(u_norm), "grad_norm": norms, "cosine": cosines,
                          "hypergradient": g_lam.tolist()})
        return g_lam


def run(domain: str, task: str, data: str, steps: int, sets: list[str], device: torch.device) -> dict:
    job = runner.resolve(domain, task, "cpu", options={"data": data}, sets=sets)
    table = job.registry.get("datasets", job.task.dataset, domain).load(job.cfg)
    _, engine = build(job, dataclasses.replace(job.cfg, method="tapweight"), table, device)
    recorder = Recorder(engine)
    engine.hypergrad = recorder
    lam = []
    for _ in range(steps):
        engine.step()
        lam.append(engine.lam.tolist())
    return {"command": "alignment", "domain": domain, "task": task, "sets": sets, "steps": steps,
            "objectives": objective_names(job), "rows": recorder.rows, "lambda": lam}


def table(result: dict) -> str:
    """Per objective: the cosine at step 1, its mean absolute value over steps 2–5 and after
    step 5, and ‖∇_θ L_k‖ at the first and last step; ‖u_b‖'s range above."""
    rows = result["rows"]
    cos = np.array([r["cosine"] for r in rows])
    grad = np.array([r["grad_norm"] for r in rows])
    u_b = [r["u_b"] for r in rows]
    later = np.abs(cos[5:]).mean(0) if len(rows) > 5 else np.full(cos.shape[1], np.nan)
    lines = [f"{result['domain']}/{result['task']}, {result['steps']} steps, {' '.join(result['sets'])}; "
             f"‖u_b‖ from {min(u_b):.3g} to {max(u_b):.3g}",
             "| objective | cosine at step 1 | mean abs. cosine, steps 2–5 | after step 5 "
             "| ‖∇L_k‖ first → last | λ at the end |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, name in enumerate(result["objectives"]):
        early = np.abs(cos[1:5, k]).mean() if len(rows) > 1 else float("nan")
        lines.append(f"| {name} | {cos[0, k]:+.4f} | {early:.4f} | {later[k]:.4f} | "
                     f"{grad[0, k]:.3g} → {grad[-1, k]:.3g} | {result['lambda'][-1][k]:.3f} |")
    return "\n".join(lines)
