"""A finished molecular run: predict new SMILES, export the ResNet18 for torchvision and ImageMol.

One small run (32-px images of 60 simple molecules, two global steps) serves every test. Each
export is loaded by its target library (torchvision's ``resnet18``; ImageMol's ``finetune.py``
loading, mimicked: the first 120 tensors copied by position) and must compute what the run's
own model computes.
"""

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from tapweight.commands.export import export
from tapweight.commands.predict import predict
from tapweight.job.runner import resolve, run
from tapweight_mol.backbone import IMAGENET_MEAN, IMAGENET_STD, ImageMolResNet18, load_init

pytestmark = pytest.mark.slow
TINY = ["steps=2", "pretrain.batch_size=8", "finetune.batch_size=8", "reweight.batch_size=8",
        "final.epochs=1", "final.batch_size=16", "mol.image_size=32", "mol.mir_size=16",
        "mol.render_workers=1", "split=random", "objectives=[mg100,jpp]"]
#: chains of 1-15 carbons, bare or ending in O, N or Cl: the polar ones are labelled 1
MOLECULES = [("C" * n + end, int(end in ("O", "N"))) for n in range(1, 16) for end in ("", "O", "N", "Cl")]


@pytest.fixture(scope="module")
def mol_run(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("mol")
    pd.DataFrame(MOLECULES, columns=["smiles", "p_np"]).to_csv(folder / "bbbp.csv", index=False)
    job = resolve("mol", "bbbp", preset="cpu", options={"data": str(folder / "bbbp.csv")}, sets=TINY)
    run(job, folder / "run", quiet=True)
    return folder / "run"


def images(n: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 3, 32, 32)  # RGB in [0, 1], as the task batches hold them


def normalized(x: torch.Tensor) -> torch.Tensor:
    """What ImageMol's loaders (and a torchvision user) feed the network."""
    return torchvision.transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)


def theta(run_folder) -> ImageMolResNet18:
    model = ImageMolResNet18()
    model.load_state_dict(load_file(str(run_folder / "seed0" / "backbone.safetensors")))
    return model.eval()


def test_predict_scores_every_valid_smiles_and_names_the_others(mol_run, tmp_path):
    expected = pd.read_csv(mol_run / "seed0" / "predictions.csv")
    smiles = expected["input"].tolist()
    new = pd.DataFrame({"smiles": [smiles[0], "not_a_smiles", "", *smiles[1:], "C1CC"]})
    new.to_csv(tmp_path / "new.csv", index=False)
    got = predict(mol_run, tmp_path / "new.csv", device="cpu")
    assert list(got.columns) == ["row", "input", "pred_p_np", "error"] and len(got) == len(new)
    assert got["error"].tolist()[1:3] == ["RDKit cannot parse this SMILES", "empty SMILES"]
    assert got["error"].iloc[-1] == "RDKit cannot parse this SMILES"
    valid = got["error"] == ""
    assert valid.sum() == len(smiles) and got.loc[~valid, "pred_p_np"].isna().all()
    np.testing.assert_allclose(got.loc[valid, "pred_p_np"], expected["pred_p_np"], rtol=1e-4, atol=1e-6)
    # a SMILES file (one per line, a header) gives the same
    (tmp_path / "new.smi").write_text("smiles\n" + "\n".join(smiles) + "\n")
    again = predict(mol_run, tmp_path / "new.smi", device="cpu")
    np.testing.assert_allclose(again["pred_p_np"], expected["pred_p_np"], rtol=1e-4, atol=1e-6)


def test_torchvision_export_loads_into_resnet18(mol_run, tmp_path):
    (file,) = export(mol_run, "torchvision", tmp_path / "tv")
    state = torch.load(file, weights_only=True)
    encoder = torchvision.models.resnet18()
    encoder.fc = nn.Identity()  # the encoder alone: 512-d features
    encoder.load_state_dict(state)  # strict
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(normalized(x)), theta(mol_run)(x), rtol=1e-4, atol=1e-5)

    (file,) = export(mol_run, "torchvision", tmp_path / "ft", finetuned=True)
    classifier = torchvision.models.resnet18(num_classes=1)  # the task head is fc
    classifier.load_state_dict(torch.load(file, weights_only=True))
    model = load_file(str(mol_run / "seed0" / "model.safetensors"))
    ours = ImageMolResNet18()
    ours.load_state_dict({k.removeprefix("backbone."): v for k, v in model.items() if k.startswith("backbone.")})
    with torch.no_grad():
        logits = ours.eval()(x) @ model["head.weight"].T + model["head.bias"]
        torch.testing.assert_close(classifier.eval()(normalized(x)), logits, rtol=1e-4, atol=1e-5)


def test_imagemol_export_round_trips(mol_run, tmp_path):
    (file,) = export(mol_run, "imagemol", tmp_path / "im")
    checkpoint = torch.load(file, weights_only=True)
    assert checkpoint["arch"] == "ResNet18" and len(checkpoint["state_dict"]) == 120
    assert all(k.startswith("embedding_layer.") for k in checkpoint["state_dict"])
    assert not file.read_bytes().startswith(b"PK")  # pre-zip: ImageMol's torch 1.4 reads it
    # ImageMol's finetune.py --resume: the first 120 tensors into resnet18's first 120, by position
    resnet = torchvision.models.resnet18(num_classes=1)
    state = resnet.state_dict()
    for ours, theirs in zip(list(checkpoint["state_dict"])[:120], list(state)[:120]):
        state[theirs] = checkpoint["state_dict"][ours]
    resnet.load_state_dict(state)
    resnet.fc = nn.Identity()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(resnet.eval()(normalized(x)), theta(mol_run)(x), rtol=1e-4, atol=1e-5)
    # and tapweight's --init reads it back: every tensor, nothing left over
    back = ImageMolResNet18()
    report = load_init(back, str(file))
    assert (report.loaded, len(report.missing), len(report.unexpected)) == (120, 0, 0)
    assert report.format.startswith("ImageMol release")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theta(mol_run).state_dict().items())


def test_a_head_torchvision_cannot_hold_is_one_line(tmp_path):
    from tapweight import TapweightError
    from tapweight_mol.inference import write_torchvision

    head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1))
    with pytest.raises(TapweightError, match="ends in one linear fc, and this run's head is a Sequential"):
        write_torchvision(ImageMolResNet18(), head, tmp_path, tmp_path)


@pytest.mark.parametrize("name,text", [("new.smi", "smiles\nCCO\n\nnot_a_smiles\nc1ccccc1\n"),
                                       ("new.csv", "smiles,name\nCCO,a\n\nnot_a_smiles,c\nc1ccccc1,d\n")])
def test_a_blank_line_is_an_empty_smiles_so_row_numbers_stay_the_files(tmp_path, name, text):
    from tapweight_mol.inference import read_smiles

    (tmp_path / name).write_text(text)
    read = read_smiles(str(tmp_path / name), "smiles", workers=1)
    assert list(read.inputs) == ["CCO", "", "not_a_smiles", "c1ccccc1"]
    assert read.errors == ["", "empty SMILES", "RDKit cannot parse this SMILES", ""]
