"""``python -m bench curvature``: the MSE head's Hessian and the SGD stability bound, checked
against autograd and against SGD itself."""

import pytest
import torch

from bench.__main__ import main
from bench.curvature import head_hessian, stable_lr


def test_the_head_hessian_is_autograds_hessian_of_the_squared_loss():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(40, 5, generator=gen, dtype=torch.float64) + 1.5
    y = torch.randn(40, generator=gen, dtype=torch.float64) * 30  # the targets do not matter

    def loss(params):  # params = (w [5], b)
        return ((f @ params[:5] + params[5] - y) ** 2).mean()

    expected = torch.autograd.functional.hessian(loss, torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(head_hessian(f), expected)


@pytest.mark.parametrize("factor,diverges", [(0.95, False), (1.05, True)])
def test_sgd_with_momentum_diverges_just_above_the_bound(factor, diverges):
    curvature, momentum = 700.0, 0.9
    w = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=factor * stable_lr(curvature, momentum), momentum=momentum)
    for _ in range(100):
        opt.zero_grad()
        (0.5 * curvature * w ** 2).sum().backward()
        opt.step()
    assert (abs(float(w.detach())) > 1) == diverges  # |w| grows like 1.48^t, or shrinks like 0.95^t


def test_curvature_runs_on_a_task_and_reports_the_bound(toy, capsys):
    result = main(["curvature", "toy", "blobs-reg", "--batches", "2", "--set", "final.lr=0.5"])
    final = result["levels"]["final"]
    assert result["examples"] == 32 and final["lr"] == 0.5
    assert final["stable_lr"] == pytest.approx(2 * 1.9 / result["top_eigenvalue"])
    assert "| final | sgd (momentum 0.9) | 0.5 |" in capsys.readouterr().out
