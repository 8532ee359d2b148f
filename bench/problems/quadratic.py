"""A small three-level quadratic problem whose hypergradients are known in closed form.

θ = (θ_b ∈ R^n, h_1..h_K): L_k(θ) = ½‖A_k θ_b − b_k‖² + ½(h_k − c_k·θ_b)²  (h_k: objective k's head)
w = w_b ∈ R^n (the head is a fixed 1):  L_ft(w) = mean_i (x_i·w − y_i)²,  L_val likewise on val.
Everything is float64 so the methods can be held to tight tolerances.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from tapweight.config import RunConfig
from tapweight.method.batches import BatchStream
from tapweight.method.engine import Engine
from tapweight.method.models import PretrainModel, TaskModel


class Vector(nn.Module):
    """θ_b (or w_b) itself; features of x are x·θ_b."""

    out_dim = 1

    def __init__(self, n: int):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def forward(self, x):
        return (x @ self.theta)[:, None]


class Quadratic(nn.Module):
    def __init__(self, a, b, c):
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.register_buffer("c", c)
        self.h = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, backbone, batch):
        r = self.a @ backbone.theta - self.b
        return 0.5 * r @ r + 0.5 * (self.h - self.c @ backbone.theta) ** 2


def unit_head() -> nn.Module:
    head = nn.Linear(1, 1, bias=False).double()
    head.weight.data.fill_(1.0)
    head.weight.requires_grad_(False)
    return head


def collate(items):
    return tuple(torch.stack(t) for t in zip(*items))


class Problem:
    def __init__(self, n=5, k=3, m_train=12, m_val=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
        self.n, self.k = n, k
        self.a = [torch.eye(n, dtype=torch.float64) + 0.3 * r(n, n) for _ in range(k)]
        self.b, self.c = [r(n) for _ in range(k)], [0.5 * r(n) for _ in range(k)]
        self.x_train, self.y_train = r(m_train, n), r(m_train, 1)
        self.x_val, self.y_val = r(m_val, n), r(m_val, 1)

    def config(self, **reweight) -> RunConfig:
        cfg = RunConfig(steps=1)
        for level, lr in (("pretrain", 0.05), ("finetune", 0.1)):
            sub = getattr(cfg, level)
            sub.optimizer, sub.lr, sub.momentum, sub.weight_decay, sub.scheduler = "sgd", lr, 0.0, 0.0, "constant"
        cfg.finetune.gamma = 0.3
        cfg.pretrain.batch_size = 4
        cfg.finetune.batch_size, cfg.reweight.batch_size = len(self.x_train), len(self.x_val)
        cfg.reweight.momentum, cfg.reweight.scheduler = 0.0, "constant"
        for key, value in reweight.items():
            setattr(cfg.reweight, key, value)
        return cfg

    def engine(self, cfg, lam0=None, theta=None, h=None, w=None) -> Engine:
        backbone = Vector(self.n)
        objectives = [Quadratic(a, b, c) for a, b, c in zip(self.a, self.b, self.c)]
        theta_model = PretrainModel(backbone, objectives, [f"q.{i}" for i in range(self.k)])
        w_model = TaskModel(Vector(self.n), unit_head())
        with torch.no_grad():
            backbone.theta.copy_(torch.linspace(-1, 1, self.n) if theta is None else theta)
            w_model.backbone.theta.copy_(0.5 * torch.ones(self.n) if w is None else w)
            for i, obj in enumerate(objectives):
                obj.h.fill_(0.1 * i if h is None else float(h[i]))
        corpus = BatchStream(TensorDataset(torch.zeros(4, 1)), 4, collate, 0)
        train = BatchStream(TensorDataset(self.x_train, self.y_train), len(self.x_train), collate, 1)
        val = BatchStream(TensorDataset(self.x_val, self.y_val), len(self.x_val), collate, 2)
        return Engine(theta_model, w_model, corpus, train, val, cfg, "mse", torch.device("cpu"),
                      True, lam0)

    # -- independent answers -----------------------------------------------------------------
    def losses(self, theta_b, heads):
        return torch.stack([0.5 * (a @ theta_b - b) @ (a @ theta_b - b) + 0.5 * (h - c @ theta_b) ** 2
                            for a, b, c, h in zip(self.a, self.b, self.c, heads)])

    def ft_grad(self, w):
        return 2 * self.x_train.T @ (self.x_train @ w - self.y_train[:, 0]) / len(self.x_train)

    def val_loss(self, w):
        return ((self.x_val @ w - self.y_val[:, 0]) ** 2).mean()

    def unrolled_alpha_grad(self, alpha, theta_b, heads, w, eta1, eta2, gamma):
        """d L_val(w'(θ'(α))) / dα by autograd through one SGD step of each level."""
        alpha = alpha.clone().requires_grad_(True)
        theta_b, heads = theta_b.clone().requires_grad_(True), heads.clone().requires_grad_(True)
        total = (torch.softmax(alpha, 0) * self.losses(theta_b, heads)).sum()
        g_b, _ = torch.autograd.grad(total, (theta_b, heads), create_graph=True)
        theta_new = theta_b - eta1 * g_b
        w_new = w - eta2 * (self.ft_grad(w) + 2 * gamma * (w - theta_new))
        return torch.autograd.grad(self.val_loss(w_new), alpha)[0]

    def optimum(self, lam):
        """θ*(λ) (with h_k* = c_k·θ*) by a linear solve."""
        hess = sum(l * a.T @ a for l, a in zip(lam, self.a))
        rhs = sum(l * a.T @ b for l, a, b in zip(lam, self.a, self.b))
        theta = torch.linalg.solve(hess, rhs)
        return theta, torch.stack([c @ theta for c in self.c])

    def w_star(self, theta, gamma):
        m = len(self.x_train)
        lhs = 2 * self.x_train.T @ self.x_train / m + 2 * gamma * torch.eye(self.n, dtype=torch.float64)
        return torch.linalg.solve(lhs, 2 * self.x_train.T @ self.y_train[:, 0] / m + 2 * gamma * theta)

    def implicit_alpha_grad(self, alpha, gamma):
        """d L_val(w*(θ*(softmax α))) / dα in closed form (autograd through the solves)."""
        alpha = alpha.clone().requires_grad_(True)
        theta, _ = self.optimum(torch.softmax(alpha, 0))
        return torch.autograd.grad(self.val_loss(self.w_star(theta, gamma)), alpha)[0]

    def hessian_bounds(self, lam, gamma):
        """Largest and smallest eigenvalues of H_pt (θ_b and heads) and H_ft."""
        n, k = self.n, self.k
        h_pt = torch.zeros(n + k, n + k, dtype=torch.float64)
        for i, (l, a, c) in enumerate(zip(lam, self.a, self.c)):
            h_pt[:n, :n] += l * (a.T @ a + torch.outer(c, c))
            h_pt[:n, n + i] -= l * c
            h_pt[n + i, :n] -= l * c
            h_pt[n + i, n + i] += l
        m = len(self.x_train)
        h_ft = 2 * self.x_train.T @ self.x_train / m + 2 * gamma * torch.eye(n, dtype=torch.float64)
        eig = torch.cat([torch.linalg.eigvalsh(h_pt), torch.linalg.eigvalsh(h_ft)])
        return float(eig.min()), float(eig.max())
