"""The ResNet18 backbone and the three checkpoint formats --init accepts."""

import logging

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from tapweight import TapweightError
from tapweight.models import TaskModel
from tapweight_mol.backbone import ImageMolResNet18, build


class Cfg:
    def __init__(self, init=""):
        self.init = init


@pytest.fixture(scope="module")
def reference():
    """A torchvision ResNet18 with random (non-default) weights and batch-norm statistics."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name
                             else torch.randn_like(tensor) * 0.05)
    return net


def _same_body(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    assert set(ours) == {k for k in theirs if not k.startswith("fc.")}
    return all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_features_are_512_wide():
    model = ImageMolResNet18()
    assert model.out_dim == 512
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 512)


def test_random_init_warns(caplog):
    with caplog.at_level(logging.WARNING):
        build(Cfg())
    assert "random weights" in caplog.text and "--init" in caplog.text


def test_imagemol_release_format(reference, tmp_path):
    body = nn.Sequential(*list(reference.children())[:-1])  # ImageMol's embedding_layer
    state = {f"module.embedding_layer.{k}": v for k, v in body.state_dict().items()}
    state.update({"module.jigsaw_classifier.weight": torch.zeros(101, 512),
                  "module.class_classifier1.weight": torch.zeros(100, 512),
                  "module.class_classifier2.weight": torch.zeros(1000, 512),
                  "module.class_classifier3.weight": torch.zeros(10000, 512)})
    path = tmp_path / "ImageMol.pth.tar"
    torch.save({"arch": "ResNet18", "epoch": 30, "state_dict": state}, path)
    assert _same_body(build(Cfg(str(path))), reference)


def test_torchvision_state_dict(reference, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # fc.* is ignored
    assert _same_body(build(Cfg(str(path))), reference)


def test_tapweight_checkpoints(reference, tmp_path):
    backbone = ImageMolResNet18()
    backbone.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    model = TaskModel(backbone, nn.Linear(512, 2))
    engine_state = tmp_path / "checkpoint.pt"  # the engine's state: θ under "theta"
    torch.save({"step": 3, "history": [{"step": 1.0}], "theta": model.state_dict()}, engine_state)
    assert _same_body(build(Cfg(str(engine_state))), reference)
    weights = tmp_path / "backbone.safetensors"  # what the runner saves
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(weights))
    assert _same_body(build(Cfg(str(weights))), reference)


def test_a_checkpoint_of_another_network_is_a_user_error(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(TapweightError, match="does not fit ResNet18"):
        build(Cfg(str(path)))
    with pytest.raises(TapweightError, match="does not exist"):
        build(Cfg(str(tmp_path / "missing.pt")))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(TapweightError, match="not a readable"):
        build(Cfg(str(tmp_path / "junk.pt")))
