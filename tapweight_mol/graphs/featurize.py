"""Molecule → graph, as Hu et al. (ICLR 2020) featurize for their released GNNs.

Atoms are ``(atomic number − 1, chirality tag)`` and bonds ``(bond type, bond direction)``,
each an index into an embedding table of the GNN (gnn.py):

- atom types 0..117 are atomic numbers 1..118; a dummy atom (atomic number 0, ``*``) takes
  row 118, which their tables hold but no element uses; row 119 is the mask token of
  attribute masking (`MASK_ATOM`);
- chirality: unspecified, tetrahedral clockwise, tetrahedral counter-clockwise → 0..2. Their
  table has 3 rows while RDKit also knows ``CHI_OTHER`` (and newer tags): every other tag
  counts as unspecified (0), the tag the model saw for atoms without tetrahedral stereo;
- bond types: single, double, triple, aromatic → 0..3; other RDKit types (dative,
  unspecified...) count as single (0); type 4 marks the self-loops the layers add
  (`SELF_LOOP_BOND`) and 5 the mask token (`MASK_BOND`);
- bond directions: none, end-up-right, end-down-right → 0..2; other directions count as none.

Every bond is two directed edges, ``(i, j)`` then ``(j, i)``, in RDKit's bond order.
"""

from __future__ import annotations

import torch
from rdkit import Chem

from tapweight_mol.graphs.pyg import Data

NUM_ATOM_TYPES = 120  # 118 elements, a dummy atom, the mask token
DUMMY_ATOM = 118
MASK_ATOM = 119
NUM_CHIRALITY = 3
NUM_BOND_TYPES = 6  # single, double, triple, aromatic, self-loop, mask
SELF_LOOP_BOND = 4
MASK_BOND = 5
NUM_BOND_DIRS = 3

CHIRALITY = {Chem.ChiralType.CHI_UNSPECIFIED: 0, Chem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
             Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 2}
BOND_TYPES = {Chem.BondType.SINGLE: 0, Chem.BondType.DOUBLE: 1, Chem.BondType.TRIPLE: 2,
              Chem.BondType.AROMATIC: 3}
BOND_DIRS = {Chem.BondDir.NONE: 0, Chem.BondDir.ENDUPRIGHT: 1, Chem.BondDir.ENDDOWNRIGHT: 2}


def atom_features(atom: Chem.Atom) -> tuple[int, int]:
    number = atom.GetAtomicNum()
    return (number - 1 if number > 0 else DUMMY_ATOM), CHIRALITY.get(atom.GetChiralTag(), 0)


def bond_features(bond: Chem.Bond) -> tuple[int, int]:
    return BOND_TYPES.get(bond.GetBondType(), 0), BOND_DIRS.get(bond.GetBondDir(), 0)


def mol_to_graph(mol: Chem.Mol) -> Data:
    """``Data(x long [n_atoms, 2], edge_index long [2, 2·n_bonds], edge_attr long [2·n_bonds, 2])``."""
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.long).view(-1, 2)
    edges, attrs = [], []
    for bond in mol.GetBonds():
        i, j, features = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond_features(bond)
        edges += [(i, j), (j, i)]
        attrs += [features, features]
    edge_index = torch.tensor(edges, dtype=torch.long).view(-1, 2).t().contiguous()
    edge_attr = torch.tensor(attrs, dtype=torch.long).view(-1, 2)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr)


def smiles_to_graph(smiles: str) -> Data:
    """The graph of a SMILES RDKit parses (the domain's loaders keep only those)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    return mol_to_graph(mol)
