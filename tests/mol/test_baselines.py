"""``python -m bench baselines``: scored on tapweight's own FreeSolv loader and scaffold split."""

import json

import numpy as np
import pytest

from bench.__main__ import main
from tapweight import TapweightError
from tapweight_mol import moleculenet
from tapweight_mol.splits import scaffold_split
from tests.mol.conftest import BBBP, FREESOLV
from tests.mol.test_regression_sets import Cfg, needs_freesolv


@needs_freesolv
def test_baselines_score_on_the_scaffold_split_in_kcal_per_mol(tmp_path, capsys):
    out = tmp_path / "baselines.json"
    result = main(["baselines", "mol", "freesolv", "--data", str(FREESOLV), "--seeds", "0,1",
                   "--trees", "5", "--json", str(out)])
    assert json.loads(out.read_text())["baselines"].keys() == {"train mean", "rf morgan", "rf descriptors"}
    table = moleculenet.load("freesolv", Cfg(str(FREESOLV)))
    split = scaffold_split(table)
    y = table.labels[:, 0]
    assert result["sizes"] == {"train": len(split.train), "val": len(split.val), "test": len(split.test)}
    mean = result["baselines"]["train mean"]
    assert mean["test_mean"] == pytest.approx(np.sqrt(np.mean((y[split.test] - y[split.train].mean()) ** 2)))
    assert mean["test_mae_mean"] == pytest.approx(np.mean(np.abs(y[split.test] - y[split.train].mean())))
    forest = result["baselines"]["rf descriptors"]["seeds"]
    assert forest[0]["test"] != forest[1]["test"]  # one forest per seed
    assert "| rf morgan |" in capsys.readouterr().out


def test_a_classification_task_is_refused():
    with pytest.raises(TapweightError, match="bce task; the baselines are for regression"):
        main(["baselines", "mol", "bbbp", "--data", str(BBBP)])
