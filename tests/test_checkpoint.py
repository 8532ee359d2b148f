"""--init files: what tapweight saves loads back into a backbone; mismatches are one line."""

import pytest
import torch

from tapweight import TapweightError, load_backbone
from tapweight.job.checkpoint import save_state, save_weights
from tests.toy_plugin import Backbone


def fresh(hidden=16):
    torch.manual_seed(1)
    return Backbone(8, hidden)


def test_saved_backbone_and_engine_checkpoint_load_back(tmp_path):
    torch.manual_seed(0)
    trained = Backbone(8, 16)
    save_weights(trained, tmp_path / "backbone.safetensors")
    theta = {f"backbone.{k}": v for k, v in trained.state_dict().items()} | {"objectives.0.w": torch.ones(1)}
    save_state({"step": 3, "theta": theta}, tmp_path / "checkpoint.pt")
    torch.save(trained.state_dict(), tmp_path / "plain.pt")
    for name in ("backbone.safetensors", "checkpoint.pt", "plain.pt"):
        model = fresh()
        load_backbone(model, str(tmp_path / name))
        for a, b in zip(model.state_dict().values(), trained.state_dict().values()):
            assert torch.equal(a, b), name


def test_mismatch_and_missing_files_are_one_line(tmp_path):
    save_weights(fresh(16), tmp_path / "b.safetensors")
    with pytest.raises(TapweightError, match="does not fit backbone") as err:
        load_backbone(fresh(32), str(tmp_path / "b.safetensors"))
    assert "\n" not in str(err.value)
    with pytest.raises(TapweightError, match="does not exist"):
        load_backbone(fresh(), str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TapweightError, match="not a readable torch file"):
        load_backbone(fresh(), str(tmp_path / "junk.pt"))
