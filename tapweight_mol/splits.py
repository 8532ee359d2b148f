"""Scaffold splits of molecules (Bemis & Murcko, J. Med. Chem. 1996).

``scaffold``: deterministic, as deepchem and ImageMol do it. Molecules are grouped by
their Bemis–Murcko scaffold; groups go, largest first (ties: later first occurrence
first), to train until it would pass 80 %, then to validation until 90 %, then to test.
Test molecules therefore have scaffolds never seen in training.

``random_scaffold``: the same groups in a seeded random order, each placed in the first
split it fits into (Hu et al., "Strategies for pre-training GNNs", 2020).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from tapweight import Split, Table

FRACTIONS = (0.8, 0.1, 0.1)


def scaffold_of(smiles: str) -> str:
    """The Bemis–Murcko scaffold SMILES (no chirality); '' for acyclic molecules."""
    mol = Chem.MolFromSmiles(smiles)
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_groups(smiles: list[str]) -> list[list[int]]:
    """Row indices grouped by scaffold, in order of first occurrence."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[scaffold_of(s)].append(i)
    return list(groups.values())


def _to_split(parts: list[list[int]]) -> Split:
    return Split(*(np.array(sorted(p), dtype=np.int64) for p in parts))


def scaffold_split(table: Table, seed: int = 0) -> Split:
    """Deterministic scaffold split; ``seed`` is ignored (the split is the benchmark's)."""
    n = len(table.inputs)
    groups = sorted(scaffold_groups(list(table.inputs)), key=lambda g: (len(g), g[0]), reverse=True)
    train_cut, val_cut = FRACTIONS[0] * n, (FRACTIONS[0] + FRACTIONS[1]) * n
    train, val, test = [], [], []
    for group in groups:
        if len(train) + len(group) > train_cut:
            (test if len(train) + len(val) + len(group) > val_cut else val).extend(group)
        else:
            train.extend(group)
    return _to_split([train, val, test])


def random_scaffold_split(table: Table, seed: int) -> Split:
    """Scaffold groups in an order drawn from ``seed``, each into the first split with room."""
    n = len(table.inputs)
    groups = scaffold_groups(list(table.inputs))
    order = np.random.default_rng(seed).permutation(len(groups))
    caps = [FRACTIONS[0] * n, FRACTIONS[1] * n]
    train, val, test = [], [], []
    for g in order:
        group = groups[g]
        if len(train) + len(group) <= caps[0]:
            train.extend(group)
        elif len(val) + len(group) <= caps[1]:
            val.extend(group)
        else:
            test.extend(group)
    return _to_split([train, val, test])
