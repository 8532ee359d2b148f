"""Shared fixtures: a run config with the tabular options, a small backbone."""

from types import SimpleNamespace

import pytest
import torch
from tapweight import RunConfig

from tapweight_tabular.backbone import build_mlp
from tapweight_tabular.options import TabularOptions


def _make_cfg(task: str = "breast-cancer", **options) -> RunConfig:
    return RunConfig(domain="tabular", task=task, options=TabularOptions(**options))


@pytest.fixture
def make_cfg():
    """``make_cfg(task, **options)``: a fresh RunConfig for a tabular task."""
    return _make_cfg


@pytest.fixture
def cfg() -> RunConfig:
    return _make_cfg(hidden=16, layers=2, out_dim=8)


#: what build_mlp reads of the run's DomainData: the input width
SIX_FEATURES = SimpleNamespace(info={"features": 6})


@pytest.fixture
def backbone(cfg):
    torch.manual_seed(0)
    return build_mlp(cfg, SIX_FEATURES)
