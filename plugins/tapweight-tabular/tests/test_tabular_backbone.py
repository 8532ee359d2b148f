"""The MLP backbone: shapes, and starting from saved weights (``--init``)."""

from types import SimpleNamespace

import pytest
import torch
from conftest import SIX_FEATURES
from tapweight import TapweightError

from tapweight_tabular.backbone import build_mlp


def test_maps_rows_to_out_dim_features(cfg, backbone):
    assert backbone(torch.randn(5, 6)).shape == (5, 8)
    assert backbone.out_dim == 8 and backbone.n_features == 6
    linear = [m for m in backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(6, 16), (16, 16), (16, 8)]


def test_input_width_comes_from_the_data(cfg):
    wide = build_mlp(cfg, SimpleNamespace(info={"features": 9}))
    assert wide.n_features == 9 and wide(torch.randn(2, 9)).shape == (2, 8)


def test_init_loads_a_saved_backbone_with_or_without_prefix(cfg, backbone, tmp_path):
    rows = torch.randn(3, 6)
    for name, state in (("plain.pt", backbone.state_dict()),
                        ("theta.pt", {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
                         | {"objectives.0.decoder.0.weight": torch.zeros(1)})):
        torch.save(state, tmp_path / name)
        cfg.init = str(tmp_path / name)
        torch.manual_seed(99)  # a different random init, overwritten by the file
        assert torch.equal(build_mlp(cfg, SIX_FEATURES)(rows), backbone(rows))


def test_init_errors_are_one_line(cfg, make_cfg, backbone, tmp_path):
    cfg.init = str(tmp_path / "missing.pt")
    with pytest.raises(TapweightError, match="does not exist"):
        build_mlp(cfg, SIX_FEATURES)
    torch.save(backbone.state_dict(), tmp_path / "b.pt")
    wider = make_cfg(hidden=32, layers=2, out_dim=8)
    wider.init = str(tmp_path / "b.pt")
    with pytest.raises(TapweightError, match="does not fit"):
        build_mlp(wider, SIX_FEATURES)
