"""TapWeight on a problem where one pretraining objective helps the task and others do not.

Downstream: y = x·β with 4 training points in R^10 (under-determined: the fine-tune alone
cannot find β) and 64 validation points. Objectives pull θ towards β (helpful), towards a
random vector (useless) and towards −β (harmful). Level II ties w to θ, so the validation
loss rewards weight on the helpful objective; the learned λ must move most mass onto it.
"""

import torch

from bench.problems.quadratic import Problem


def helpful_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    n = 10
    beta = torch.randn(n, generator=g, dtype=torch.float64)
    p = Problem(n=n, k=3, seed=seed)
    eye = torch.eye(n, dtype=torch.float64)
    p.a = [eye, eye, eye]
    p.b = [beta, 2 * torch.randn(n, generator=g, dtype=torch.float64), -beta]
    p.c = [torch.zeros(n, dtype=torch.float64)] * 3
    p.x_train = torch.randn(4, n, generator=g, dtype=torch.float64)
    p.y_train = (p.x_train @ beta)[:, None]
    p.x_val = torch.randn(64, n, generator=g, dtype=torch.float64)
    p.y_val = (p.x_val @ beta)[:, None]
    return p


def test_weight_moves_to_the_helpful_objective():
    p = helpful_problem()
    cfg = p.config(hypergrad="fd", scale="reference", lr=0.5)
    cfg.steps = 300
    engine = p.engine(cfg, theta=torch.zeros(p.n), w=torch.zeros(p.n))
    for _ in range(cfg.steps):
        engine.step()
    lam = engine.lam
    assert lam[0] > 0.8, lam
    assert lam[2] < 0.05, lam  # the harmful objective is switched off
    first, last = engine.history[0]["val_loss"], engine.history[-1]["val_loss"]
    assert last < 0.2 * first


def test_uniform_weights_do_worse_than_learned():
    """Control: with λ frozen at uniform the validation loss stays far higher."""
    p = helpful_problem()
    cfg = p.config(hypergrad="fd", lr=0.0)
    cfg.steps = 300
    engine = p.engine(cfg, theta=torch.zeros(p.n), w=torch.zeros(p.n))
    for _ in range(cfg.steps):
        engine.step()
    learned = p.engine(p.config(hypergrad="fd", lr=0.5), theta=torch.zeros(p.n), w=torch.zeros(p.n))
    learned.cfg.steps = 300
    for _ in range(300):
        learned.step()
    assert learned.history[-1]["val_loss"] < 0.5 * engine.history[-1]["val_loss"]
