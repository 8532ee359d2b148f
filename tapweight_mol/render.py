"""SMILES → RGB molecule images; canonical SMILES; a process pool for per-molecule work.

ImageMol draws each molecule with RDKit's 2D depiction on a 224×224 canvas
(``Draw.MolsToGridImage([mol], subImgSize=(224, 224))``). We draw the same way; a smaller
``size`` is drawn at 224 px and downsampled, so thin bonds stay visible at 64 px.
Images are drawn where they are used (DataLoader workers, see data.py) and kept as PNG in
the image store (store.py), keyed by (canonical SMILES, size): the same molecule in another
data set, epoch or run is read back, never drawn again.

This module imports no torch, so worker processes start fast.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from PIL import Image
from rdkit import Chem, RDLogger
from rdkit.Chem import Draw

CANVAS = 224  # ImageMol's drawing size, in pixels


def quiet_rdkit() -> None:
    """Silence RDKit's per-molecule parse errors: invalid SMILES are counted and reported."""
    RDLogger.DisableLog("rdApp.*")


#: the longest SMILES handed to RDKit. Canonicalizing a chain of ~18,000 atoms overflows
#: the C stack (8 MB; measured with RDKit 2026.09: 18,046 atoms pass, 18,125 crash the
#: process) and ring perception on such sizes takes minutes; MoleculeNet's longest SMILES
#: has under 1,000 characters, and 2,000 characters parse and canonicalize in milliseconds.
MAX_SMILES = 2000


def canonical(smiles: str) -> str | None:
    """RDKit's canonical SMILES, or None when RDKit cannot parse ``smiles`` or it is longer
    than `MAX_SMILES` (skipped and counted like any invalid SMILES, never a crash)."""
    usable = isinstance(smiles, str) and smiles.strip() and len(smiles) <= MAX_SMILES
    mol = Chem.MolFromSmiles(smiles) if usable else None
    return Chem.MolToSmiles(mol) if mol is not None else None


def abbreviate(smiles, limit: int = 60) -> str:
    """``repr(smiles)`` cut to ``limit`` characters, for warnings about skipped rows."""
    text = repr(smiles)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(smiles))} characters)"


def draw(smiles: str, size: int) -> Image.Image:
    """The RGB depiction of ``smiles``, ``size``×``size`` pixels."""
    mol = Chem.MolFromSmiles(smiles)
    image = Draw.MolToImage(mol, size=(max(size, CANVAS),) * 2).convert("RGB")
    if size < CANVAS:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes (lossless: decoding them gives the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def parallel_map(fn: Callable, items: Sequence, workers: int, chunksize: int = 64,
                 inline_below: int = 64) -> list:
    """``[fn(x) for x in items]`` over ``workers`` processes (0: one per CPU core).

    Fewer than ``inline_below`` items run in this process: starting workers would cost more.
    Workers are forked on Linux (no re-import of the caller's ``__main__``), spawned elsewhere.
    """
    if not workers:  # the cores this process may use (a container or taskset may allow fewer)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workers == 1 or len(items) < inline_below:
        return [fn(x) for x in items]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=quiet_rdkit) as pool:
        return list(pool.map(fn, items, chunksize=chunksize))
