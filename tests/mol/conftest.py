"""Shared fixtures: the real data sets, a cache for rendered images kept for the session."""

from pathlib import Path

import pytest

from tapweight import TaskSpec

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BBBP = DATA / "moleculenet" / "bbbp.csv"
CLINTOX = DATA / "moleculenet" / "clintox.csv"
FREESOLV = DATA / "moleculenet" / "freesolv.csv"
#: the task that build_data receives in unit tests (molecular data ignores it)
BBBP_TASK = TaskSpec("mol", "bbbp", "mol.bbbp", "scaffold", "bce", "roc_auc")
IMAGEMOL = DATA / "imagemol"

# a few drug-like molecules (aspirin, caffeine, ibuprofen, paracetamol, ...) for small corpora
SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1", "OC1CCCCC1", "CCN(CC)CC", "c1ccncc1",
    "O=C(O)c1ccccc1O", "CC1=CC(=O)C=CC1=O", "Clc1ccc(Cl)cc1", "NCCc1ccc(O)c(O)c1",
]


@pytest.fixture
def mol_config(cache_dir):
    """A resolved ``mol``/``bbbp`` config at 32 px, built like the runner builds one."""
    from tapweight.job.runner import resolve

    def make(*sets: str):
        return resolve("mol", "bbbp", preset="cpu",
                       sets=["mol.image_size=32", "mol.mir_size=16", "mol.render_workers=1",
                             *sets]).cfg

    return make
