"""MoleculeNet loading: real files, invalid SMILES, locations, labels and masking."""

import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tapweight import Split, Table, TapweightError
from tapweight.method.batches import to_device
from tapweight.method.metrics import score, task_loss
from tapweight_mol import moleculenet, render
from tapweight_mol.data import build_data
from tests.mol.conftest import BBBP, BBBP_TASK, CLINTOX, DATA, SMILES


class Cfg:
    def __init__(self, data=""):
        self.data = data


def test_bbbp_has_11_invalid_smiles_which_are_skipped_and_named(caplog):
    """The published file's 11 known invalid rows are named in an INFO line, not a warning."""
    with caplog.at_level(logging.INFO):
        table = moleculenet.load("bbbp", Cfg(str(BBBP)))
    assert len(table.inputs) == 2050 - 11 and table.labels.shape == (2039, 1)
    assert len(table.inputs.skipped) == 11
    assert table.inputs.skipped[0][0] == 60  # data row 60 (line 61 of the file)
    assert table.label_names == ("p_np",)
    assert set(np.unique(table.labels)) == {0.0, 1.0}
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 11 invalid SMILES of 2050 (the published file's known invalid rows)" in message
    assert "row 60" in message and [r.levelname for r in caplog.records if "invalid" in r.getMessage()] == ["INFO"]


def test_a_molecule_too_large_for_rdkit_is_skipped_and_counted_not_a_crash(tmp_path, caplog):
    """A 20,000-atom chain overflowed RDKit's stack while canonicalizing it (a segfault that
    ended the process); longer than MAX_SMILES, it is now skipped like an invalid SMILES."""
    giant = "C" * 20_000
    assert render.canonical(giant) is None
    assert render.canonical("C" * render.MAX_SMILES) is not None  # the limit itself parses
    path = tmp_path / "bbbp.csv"
    path.write_text("num,name,p_np,smiles\n" + "".join(
        f"{i},m{i},{i % 2},{s}\n" for i, s in enumerate([*SMILES[:4], giant, *SMILES[4:8]])))
    table = moleculenet.load("bbbp", Cfg(str(path)))
    assert len(table.inputs) == 8 and table.inputs.skipped == [(5, giant)]
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 invalid SMILES of 9: row 5 ('CCCCCC" in message and "(20000 characters)" in message
    assert len(message) < 500  # the warning names the row, it does not print the molecule
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # not BBBP's known 11 rows


def test_build_data_batches_the_valid_rows(mol_config):
    table = Table(moleculenet.Molecules(SMILES[:6], skipped=[(3, "C1CC"), (9, "xyz")]),
                  np.zeros((6, 1), np.float32), ("y",))
    split = Split(np.arange(4), np.array([4]), np.array([5]))
    data = build_data(mol_config(), table, split, BBBP_TASK)
    assert not any("invalid" in key for key in data.info)  # the loader's warning said it, once
    assert len(data.train) == 4 and len(data.corpus) == 4
    images, labels = data.task_collate([data.train[i] for i in range(2)])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and labels.shape == (2, 1)
    moved, _ = to_device((images, labels), torch.device("cpu"))  # float in [0, 1] on the device
    assert moved.dtype == torch.float32 and torch.equal(moved, images.float() / 255)


def test_data_directory_holds_the_file(monkeypatch):
    monkeypatch.setenv("TAPWEIGHT_DATA_DIR", str(DATA))
    assert moleculenet.locate(moleculenet.SETS["bbbp"], "") == BBBP
    assert moleculenet.locate(moleculenet.SETS["clintox"], str(DATA)) == CLINTOX


def test_offline_without_a_copy_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPWEIGHT_DATA_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(moleculenet.urllib.request, "urlopen", offline)
    with pytest.raises(TapweightError) as err:
        moleculenet.load("hiv", Cfg())
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "moleculenet" / "hiv.csv") in message and "--data" in message
    assert not list(tmp_path.rglob("*.part"))


def test_a_file_without_the_expected_columns_is_a_user_error(tmp_path):
    path = tmp_path / "bace.csv"
    path.write_text("smiles,label\nCCO,1\n")
    with pytest.raises(TapweightError, match="no column 'mol'"):
        moleculenet.load("bace", Cfg(str(path)))


def test_a_file_without_a_header_row_says_so(tmp_path):
    path = tmp_path / "bbbp.csv"
    path.write_text("1,a,1,CCO\n2,b,0,CCN\n")
    with pytest.raises(TapweightError, match=r"no column 'smiles', 'p_np' \(columns: 1, a, 1.1, CCO...\); is it "
                                             r"the bbbp CSV\?; its first row looks like data, not a header: add a "
                                             r"header line naming the columns \(bbbp reads 'smiles', 'p_np'\)"):
        moleculenet.load("bbbp", Cfg(str(path)))
    path.write_text("smiles,label\nCCO,1\n")  # a header, just not BBBP's: no hint
    with pytest.raises(TapweightError, match=r"is it the bbbp CSV\?$"):
        moleculenet.load("bbbp", Cfg(str(path)))


def test_labels_that_are_not_numbers_are_a_user_error(tmp_path):
    path = tmp_path / "bbbp.csv"
    path.write_text("num,name,p_np,smiles\n1,a,1,CCO\n2,b,yes,CCN\n3,c,,CCC\n")
    with pytest.raises(TapweightError, match=r"label column 'p_np' holds 'yes' \(row 2\)"):
        moleculenet.read_table(moleculenet.SETS["bbbp"], path)


def test_a_file_of_only_invalid_smiles_is_a_user_error(tmp_path):
    path = tmp_path / "bbbp.csv"
    path.write_text("num,name,p_np,smiles\n1,a,1,C1CC\n2,b,0,xyz\n")
    with pytest.raises(TapweightError, match="no SMILES"):
        moleculenet.load("bbbp", Cfg(str(path)))


def test_clintox_two_tasks_with_missing_labels_masked_in_loss_and_metric():
    table = moleculenet.load("clintox", Cfg(str(CLINTOX)))
    assert table.label_names == ("FDA_APPROVED", "CT_TOX") and table.labels.shape[1] == 2
    rng = np.random.default_rng(0)
    labels = table.labels[:200].copy()
    labels[rng.random(labels.shape) < 0.3] = np.nan  # hide 30 % of the labels
    logits = rng.normal(size=labels.shape).astype(np.float32)

    loss = task_loss("bce", torch.tensor(logits), torch.tensor(labels))
    present = ~np.isnan(labels)
    p = 1 / (1 + np.exp(-logits[present]))
    y = labels[present]
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(loss) == pytest.approx(expected, rel=1e-5)

    probs = 1 / (1 + np.exp(-logits))
    per_task = [roc_auc_score(labels[present[:, t], t], probs[present[:, t], t]) for t in range(2)]
    assert score("roc_auc", probs, labels) == pytest.approx(np.mean(per_task))
    one_class = labels.copy()
    one_class[:, 1] = np.where(np.isnan(one_class[:, 1]), np.nan, 1.0)  # CT_TOX: one class only
    assert score("roc_auc", probs, one_class) == pytest.approx(per_task[0])


def test_every_moleculenet_task_is_registered_with_its_loss_and_metric():
    from tapweight.plugin.manager import build_registry

    registry = build_registry()
    for name, spec in moleculenet.SETS.items():
        task = registry.task("mol", name)
        assert task.split == "scaffold"
        assert (task.loss, task.metric) == (("bce", "roc_auc") if spec.loss == "bce" else ("mse", "rmse"))
    assert {"bbbp", "bace", "clintox", "hiv", "muv", "sider", "tox21", "toxcast", "esol",
            "freesolv", "lipophilicity"} == set(moleculenet.SETS)
