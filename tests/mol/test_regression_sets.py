"""The MoleculeNet regression sets (FreeSolv, ESOL, Lipophilicity) in their canonical files.

Only FreeSolv is in ``../shared/data``; ESOL (``delaney-processed.csv``) and Lipophilicity
(``Lipophilicity.csv``) are written here in their canonical column layouts.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from tapweight.job.runner import resolve, run
from tapweight_mol import moleculenet
from tests.mol.conftest import FREESOLV, SMILES
from tests.mol.test_end_to_end import TINY

#: the canonical header of each file, and the column its label is in
LAYOUTS = {
    "esol": ("delaney-processed.csv",
             ["Compound ID", "ESOL predicted log solubility in mols per litre", "Minimum Degree",
              "Molecular Weight", "Number of H-Bond Donors", "Number of Rings",
              "Number of Rotatable Bonds", "Polar Surface Area",
              "measured log solubility in mols per litre", "smiles"],
             "measured log solubility in mols per litre"),
    "lipophilicity": ("Lipophilicity.csv", ["CMPD_CHEMBLID", "exp", "smiles"], "exp"),
    "freesolv": ("SAMPL.csv", ["iupac", "smiles", "expt", "calc"], "expt"),
}
needs_freesolv = pytest.mark.skipif(not FREESOLV.exists(), reason="../shared/data is absent")


class Cfg:
    def __init__(self, data=""):
        self.data = data


def canonical_file(folder, name, smiles, labels):
    """A file in ``name``'s canonical layout: every other column holds filler numbers."""
    file, columns, label = LAYOUTS[name]
    frame = pd.DataFrame({c: np.arange(len(smiles)) * 0.5 for c in columns})
    frame["smiles"], frame[label] = smiles, labels
    frame.to_csv(folder / file, index=False)
    return folder / file


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_canonical_file_is_found_in_a_folder_and_read_from_its_label_column(tmp_path, name):
    labels = np.linspace(-11.6, 2.1, len(SMILES))
    path = canonical_file(tmp_path, name, SMILES, labels)
    spec = moleculenet.SETS[name]
    assert (spec.loss, moleculenet.locate(spec, str(tmp_path))) == ("mse", path)  # the download's name
    table = moleculenet.load(name, Cfg(str(tmp_path)))
    assert table.label_names == (LAYOUTS[name][2],) and list(table.inputs) == SMILES
    assert table.labels[:, 0] == pytest.approx(labels)


@needs_freesolv
def test_freesolv_is_642_molecules_with_hydration_energies_in_kcal_per_mol():
    table = moleculenet.load("freesolv", Cfg(str(FREESOLV)))
    assert table.labels.shape == (642, 1) and not table.inputs.skipped
    assert -25.5 < table.labels.min() < -20 and 3 < table.labels.max() < 4


def assert_scored_in_the_files_units(out, path, label):
    """The run's test RMSE and MAE, recomputed from its predictions against ``path``'s labels."""
    result = json.loads((out / "seed0" / "metrics.json").read_text())
    predictions = pd.read_csv(out / "seed0" / "predictions.csv")
    truth = pd.read_csv(path).set_index("smiles")[label]
    residual = predictions[f"pred_{label}"] - truth.loc[predictions["input"]].to_numpy()
    assert math.isfinite(result["test"]) and math.isfinite(result["test_mae"])
    assert result["test"] == pytest.approx(np.sqrt(np.mean(residual ** 2)), rel=1e-5)
    assert result["test_mae"] == pytest.approx(np.mean(np.abs(residual)), rel=1e-5)


@pytest.mark.slow
@needs_freesolv
def test_freesolv_runs_with_the_defaults_and_reports_rmse_in_kcal_per_mol(tmp_path, cache_dir):
    job = resolve("mol", "freesolv", preset="cpu", options={"data": str(FREESOLV)},
                  sets=[*TINY[1:-1], "steps=6"])  # the scaffold split, the task's learning rates
    run(job, tmp_path / "run", quiet=True)
    assert_scored_in_the_files_units(tmp_path / "run", FREESOLV, "expt")


@pytest.mark.slow
@needs_freesolv
@pytest.mark.parametrize("name", ["esol", "lipophilicity"])
def test_esol_and_lipophilicity_files_run_end_to_end(tmp_path, cache_dir, name):
    frame = pd.read_csv(FREESOLV).iloc[:160]  # real molecules; labels on the task's scale
    path = canonical_file(tmp_path, name, frame["smiles"].tolist(), frame["expt"] / 3 - 1)
    job = resolve("mol", name, preset="cpu", options={"data": str(path)}, sets=[*TINY[1:-1], "steps=2"])
    run(job, tmp_path / "run", quiet=True)
    assert_scored_in_the_files_units(tmp_path / "run", path, LAYOUTS[name][2])


@pytest.mark.parametrize("preset", ["cpu", "paper"])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_regression_tasks_fine_tune_below_the_squared_loss_stability_bound(name, preset):
    cfg = resolve("mol", name, preset=preset).cfg
    assert (cfg.finetune.lr, cfg.final.lr) == (0.001, 0.001)  # bound ≈ 0.005 (bench curvature)
    # classification: the paper's 0.05; the cpu preset's 0.01 (random-init features, mol/options.py)
    assert resolve("mol", "bbbp", preset=preset).cfg.finetune.lr == {"paper": 0.05, "cpu": 0.01}[preset]
