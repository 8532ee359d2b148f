"""An offline stand-in for PubChem: the MOSES molecules that the ``molsets`` package ships.

The paper continues pretraining on 1 million PubChem molecules; machines without internet can
still reach a package registry, and ``molsets`` (MOSES, Polykovskiy et al., 2020) carries
1,936,962 drug-like molecules from ZINC Clean Leads in its wheel (train 1,584,663, test
176,074, scaffold test 176,225). Fetch the wheel alone, without its pinned dependencies, and
write a corpus file from it:

    pip download molsets --no-deps -d wheels/
    python -m tapweight_mol.moses wheels/molsets-*.whl --out moses.smi            # all 1.9 M
    python -m tapweight_mol.moses wheels/molsets-*.whl --out moses-1m.smi --n 1000000

The source may also be an installed ``moses`` package folder (``pip install --no-deps
molsets``). The file written is a SMILES file (a ``smiles`` header, one SMILES a line) that
``tapweight pretrain mol --corpus`` and ``tapweight run mol ... --corpus`` read. With ``--n``,
a random subset (``--seed``), in the order of the source.
"""

from __future__ import annotations

import argparse
import gzip
import zipfile
from pathlib import Path

import numpy as np

from tapweight import TapweightError, run_main

PARTS = ("train", "test", "test_scaffolds")  # moses/dataset/data/<part>.csv.gz, column SMILES
MEMBER = "moses/dataset/data/{}.csv.gz"


def _lines(data: bytes) -> list[str]:
    """The SMILES of one of MOSES's gzipped CSVs (a ``SMILES`` header, one column)."""
    lines = gzip.decompress(data).decode().splitlines()
    if not lines or lines[0].strip() != "SMILES":
        raise TapweightError("not a MOSES data file: its first line is not 'SMILES'")
    return [line.strip() for line in lines[1:] if line.strip()]


def read(source: Path) -> list[str]:
    """Every MOSES SMILES in ``source``: the molsets wheel, or the ``moses`` package folder."""
    if source.is_dir():
        folder = source if (source / "dataset").is_dir() else source / "moses"
        files = [folder / "dataset" / "data" / f"{part}.csv.gz" for part in PARTS]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise TapweightError(f"'{source}' is not the moses package folder ({missing[0]} is missing)")
        return [s for f in files for s in _lines(f.read_bytes())]
    try:
        with zipfile.ZipFile(source) as wheel:
            return [s for part in PARTS for s in _lines(wheel.read(MEMBER.format(part)))]
    except (zipfile.BadZipFile, KeyError, FileNotFoundError, IsADirectoryError) as err:
        raise TapweightError(f"'{source}' is not the molsets wheel ({err}): run `pip download "
                             "molsets --no-deps` and pass the .whl it saves") from None


def write(smiles: list[str], out: Path, n: int = 0, seed: int = 0) -> int:
    """Write ``smiles`` (or ``n`` of them, drawn with ``seed``) as a SMILES file; returns how many."""
    if n:
        if n > len(smiles):
            raise TapweightError(f"--n {n}: MOSES has {len(smiles)} molecules")
        keep = np.sort(np.random.default_rng(seed).choice(len(smiles), size=n, replace=False))
        smiles = [smiles[i] for i in keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as stream:
        stream.write("smiles\n")
        stream.writelines(f"{s}\n" for s in smiles)
    return len(smiles)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tapweight_mol.moses", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="molsets-*.whl (pip download molsets --no-deps) "
                                                   "or the installed moses package folder")
    parser.add_argument("--out", type=Path, required=True, help="the corpus file to write (.smi)")
    parser.add_argument("--n", type=int, default=0, help="a random subset of this many (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write(read(args.source), args.out, args.n, args.seed)
    print(f"{args.out}: {written} SMILES")


if __name__ == "__main__":
    run_main(main)
