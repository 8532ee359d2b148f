"""The ResNet18 backbone and the checkpoint formats --init accepts: ImageMol's release and
fine-tuned files (offline mimics, tests/mol/imagemol.py), torchvision, tapweight; strict
loading and what the run log says."""

import logging
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from tapweight import TapweightError
from tapweight.method.models import TaskModel
from tapweight_mol.backbone import ImageMolResNet18, build
from tests.mol.imagemol import ImageMol, finetuned_model, randomize, save_finetuned, save_release


def Cfg(init="", strict_load=True):
    return SimpleNamespace(init=init, options=SimpleNamespace(strict_load=strict_load))


@pytest.fixture(scope="module")
def reference():
    """A torchvision ResNet18 with random (non-default) weights and batch-norm statistics."""
    return randomize(torchvision.models.resnet18())


def _same_body(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    assert set(ours) == {k for k in theirs if not k.startswith("fc.")}
    return all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_features_are_512_wide():
    model = ImageMolResNet18()
    assert model.out_dim == 512
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 512)


def test_random_init_warns_in_one_line_what_it_does_and_where_imagemol_comes_from(caplog):
    with caplog.at_level(logging.WARNING):
        build(Cfg())
    (record,) = caplog.records
    line = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in line
    assert "random weights" in line and "does not continue ImageMol" in line
    assert "ImageMol.pth.tar" in line and "https://github.com/HongxinXiang/ImageMol" in line
    assert "--init ImageMol.pth.tar" in line


def imagemol_body(model: ImageMol) -> dict[str, torch.Tensor]:
    """ImageMol's embedding_layer in torchvision names, mapped independently of backbone.py:
    ResNet18's named children in order, without fc."""
    names = [n for n, _ in torchvision.models.resnet18().named_children()][:-1]
    return {f"{names[int(k.split('.', 1)[0])]}.{k.split('.', 1)[1]}": v
            for k, v in model.embedding_layer.state_dict().items()}


def _bit_identical(model, expected):
    ours = model.state_dict()
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert torch.equal(ours[name], value), name


@pytest.fixture(scope="module")
def imagemol():
    return randomize(ImageMol())


@pytest.mark.parametrize("data_parallel", [False, True])
def test_imagemol_release_loads_bit_identically_and_the_log_says_what(imagemol, tmp_path, caplog,
                                                                     data_parallel):
    path = tmp_path / "ImageMol.pth.tar"
    save_release(imagemol, path, data_parallel)
    assert not zipfile.is_zipfile(path)  # torch 1.4's format, as released
    with caplog.at_level(logging.INFO):
        model = build(Cfg(str(path)))
    _bit_identical(model, imagemol_body(imagemol))
    lines = [r.getMessage() for r in caplog.records if "backbone mol.resnet18" in r.getMessage()]
    assert len(lines) == 2, lines  # what loaded, and what did not
    n = len(model.state_dict())
    assert f"--init '{path}'" in lines[0] and "ImageMol release" in lines[0]
    assert "pre-zip torch file" in lines[0] and f"{n} tensors, 0 missing" in lines[0]
    assert ("DataParallel" in lines[0]) == data_parallel
    heads = [k for k in imagemol.state_dict() if not k.startswith("embedding_layer.")]
    assert len(heads) == 13 and all(h in lines[1] for h in heads)  # bn, jigsaw, class 1-3
    assert "MG heads start from scratch" in lines[1] and "mol.jpp" in lines[1]


def test_imagemols_jigsaw_head_initialises_jpp(imagemol, tmp_path, caplog, mol_config):
    from tapweight.plugin.manager import build_registry

    path = tmp_path / "ImageMol.pth.tar"
    save_release(imagemol, path, data_parallel=True)
    spec = build_registry().get("objectives", "mol.jpp")
    with caplog.at_level(logging.INFO):
        jpp = spec.build(ImageMolResNet18(), None, mol_config(f"init={path}"))
    assert torch.equal(jpp.classifier.weight, imagemol.jigsaw_classifier.weight)
    assert torch.equal(jpp.classifier.bias, imagemol.jigsaw_classifier.bias)
    assert "mol.jpp: classifier initialised from ImageMol's jigsaw_classifier" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):  # 50 permutations: 51 classes, ImageMol's head has 101
        jpp = spec.build(ImageMolResNet18(), None, mol_config(f"init={path}", "mol.jigsaw_permutations=50"))
    assert jpp.classifier.weight.shape == (51, 512)
    assert "does not fit our 51 classes" in caplog.text
    fresh = spec.build(ImageMolResNet18(), None, mol_config())  # no --init: nothing to take
    assert not torch.equal(fresh.classifier.weight[:, :8], imagemol.jigsaw_classifier.weight[:, :8])


def test_missing_tensors_are_an_error_naming_them_unless_strict_load_is_off(imagemol, tmp_path, caplog):
    state = {f"module.{k}": v for k, v in imagemol.state_dict().items()
             if k not in ("embedding_layer.4.0.conv1.weight", "embedding_layer.7.1.bn2.running_var")}
    path = tmp_path / "partial.pth.tar"
    torch.save({"arch": "ResNet18", "state_dict": state}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(TapweightError) as err:
        build(Cfg(str(path)))
    message = str(err.value)
    assert "2 tensors missing layer1.0.conv1.weight, layer4.1.bn2.running_var" in message
    assert "mol.strict_load=false" in message and "\n" not in message
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO):
        model = build(Cfg(str(path), strict_load=False))
    assert "starts 2 tensors from scratch" in caplog.text and "layer1.0.conv1.weight" in caplog.text
    expected = imagemol_body(imagemol)
    torch.manual_seed(3)
    ours, fresh = model.state_dict(), ImageMolResNet18().state_dict()
    for name, value in expected.items():
        if name in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var"):
            assert torch.equal(ours[name], fresh[name]), name  # torchvision's initialisation
        else:
            assert torch.equal(ours[name], value), name


@pytest.mark.parametrize("data_parallel", [False, True])
def test_an_imagemol_fine_tuned_single_task_checkpoint_loads_its_backbone(tmp_path, caplog, data_parallel):
    model = finetuned_model(num_tasks=1)
    path = tmp_path / "valid_best.pth"
    save_finetuned(model, path, data_parallel)
    assert b"numpy.core.multiarray\nscalar" in path.read_bytes()  # numpy 1.x's metrics
    with caplog.at_level(logging.INFO):
        loaded = build(Cfg(str(path)))
    _bit_identical(loaded, {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    assert "ImageMol fine-tuned (finetune.py)" in caplog.text
    assert "not used from" in caplog.text and "fc.weight, fc.bias (its task head)" in caplog.text


def test_an_imagemol_fine_tuned_multitask_checkpoint_is_refused_in_one_clean_line(tmp_path):
    model = finetuned_model(num_tasks=3)
    path = tmp_path / "valid_best.pth"
    save_finetuned(model, path, data_parallel=True)
    with pytest.raises(TapweightError) as err:
        build(Cfg(str(path)))
    message = str(err.value)
    assert "ImageMol fine-tuned checkpoint (finetune.py)" in message
    assert "collections.defaultdict" in message and "model_state_dict" in message
    assert "\n" not in message and "\x1b" not in message
    # the advice works: the command it gives, run on the trusted file, writes a loadable file
    command = message.split('python -c "', 1)[1].split('"', 1)[0]
    subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True)
    loaded = build(Cfg(str(tmp_path / "weights.pth")))
    _bit_identical(loaded, {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})


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
    with pytest.raises(TapweightError, match="does not fit backbone mol.resnet18") as err:
        build(Cfg(str(path)))
    assert "\n" not in str(err.value) and "of another shape" in str(err.value)
    with pytest.raises(TapweightError, match="does not exist"):
        build(Cfg(str(tmp_path / "missing.pt")))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(TapweightError, match="not a readable") as err:
        build(Cfg(str(tmp_path / "junk.pt")))
    assert "\x1b" not in str(err.value) and "\n" not in str(err.value)
