"""The MOSES corpus writer, on a wheel laid out like molsets' (the real one is 52 MB)."""

import gzip
import zipfile

import pytest

from tapweight import TapweightError
from tapweight_mol import moses
from tapweight_mol.corpus import read_raw
from tests.mol.conftest import SMILES


@pytest.fixture
def wheel(tmp_path):
    path = tmp_path / "molsets-0.3.1-py3-none-any.whl"
    parts = {"train": SMILES[:6], "test": SMILES[6:9], "test_scaffolds": SMILES[9:]}
    with zipfile.ZipFile(path, "w") as archive:
        for part, smiles in parts.items():
            archive.writestr(moses.MEMBER.format(part), gzip.compress("\n".join(["SMILES", *smiles]).encode()))
    return path


def test_the_wheel_becomes_a_corpus_file_of_every_part(wheel, tmp_path):
    moses.main([str(wheel), "--out", str(tmp_path / "all.smi")])
    assert read_raw(tmp_path / "all.smi", "all.smi") == (SMILES, {})


def test_a_subset_is_drawn_with_the_seed_in_source_order(wheel, tmp_path):
    assert moses.write(moses.read(wheel), tmp_path / "a.smi", n=5, seed=1) == 5
    moses.write(moses.read(wheel), tmp_path / "b.smi", n=5, seed=1)
    subset, _ = read_raw(tmp_path / "a.smi", "a.smi")
    assert subset == read_raw(tmp_path / "b.smi", "b.smi")[0]
    assert subset == sorted(subset, key=SMILES.index) and set(subset) < set(SMILES)


def test_an_installed_package_folder_reads_too(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    assert moses.read(tmp_path / "site" / "moses") == moses.read(wheel) == SMILES


def test_wrong_sources_are_one_line(tmp_path):
    with pytest.raises(TapweightError, match="is not the molsets wheel"):
        moses.read(tmp_path / "nothing.whl")
    with pytest.raises(TapweightError, match="is not the moses package folder"):
        moses.read(tmp_path)
