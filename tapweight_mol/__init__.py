"""tapweight_mol: the molecular domain (ImageMol, Zeng et al., Nature Machine Intelligence 2022).

Molecules become RDKit 2D depictions; a ResNet18 learns from them with ImageMol's
pretraining objectives (cluster classification, jigsaw, masked-view consistency, ...);
MoleculeNet tasks are the downstream problems. Registered through ``plugin.py``.
"""
