"""Corpus scale (``python -m bench corpus``): from a corpus file to training, at 10k–1M molecules.

For one corpus file (``python -m tapweight_mol.moses WHEEL --out F --n N`` writes one), in a
fresh cache folder, one stage after the other:

1. ``prepare``: read and canonicalize the file (tapweight_mol/corpus.py), once per file;
2. ``fingerprints``: MACCS keys of every molecule in ``--workers`` processes (clusters.py);
3. ``kmeans k``: the MG pseudo-labels at k = 100, 1000, 10000 from those fingerprints;

   each of 1–3 in a child process of its own, for its wall time and peak resident memory
   (the child's, and the largest of its worker processes'); all three are cached, once per
   corpus;
4. ``first step``: ``tapweight pretrain mol --corpus F --steps 1 --preset cpu`` as a user
   types it, in a child, with 1–3 cached and the image cache empty: wall time from the
   command to its exit (imports, reading the prepared corpus, building the model, drawing
   the first batch in a DataLoader worker, the step, writing the checkpoint);
5. ``stream``: images/s of level I's batch stream (the engine's BatchStream over the corpus
   dataset) with 0..``--workers`` DataLoader workers: first with an empty image cache (the
   workers draw and store), then again over the same batches (read back from the cache).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tapweight.errors import TapweightError

ROOT = Path(__file__).resolve().parents[1]
KS = (100, 1000, 10000)


def _peak_mb() -> dict[str, float]:
    """Peak resident memory (MB) of this process and of its largest child so far (Linux: KB)."""
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def stage(name: str, corpus: str, cache: Path, workers: int, k: int) -> dict:
    """One of stages 1–3, run in this (child) process: its seconds and peak memory, and the
    memory the process held before the stage (Python, torch and tapweight imported)."""
    from tapweight_mol import clusters
    from tapweight_mol.corpus import read_corpus
    from tapweight_mol.render import quiet_rdkit

    quiet_rdkit()
    base = {"base_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    start = time.perf_counter()
    prepared = read_corpus(corpus, workers, cache)
    result = {"molecules": len(prepared.smiles), "invalid": prepared.invalid}
    if name == "fingerprints":
        start = time.perf_counter()
        packed = clusters.cached_fingerprints(prepared.smiles, cache, workers)
        seconds = time.perf_counter() - start
        result["distinct_fingerprints"] = len(np.unique(packed.view(np.dtype((np.void, packed.shape[1])))))
        return {**result, "seconds": seconds, **base, **_peak_mb()}
    if name == "kmeans":
        clusters.cached_fingerprints(prepared.smiles, cache, workers)
        start = time.perf_counter()
        _, result["clusters"] = clusters.cluster_ids(prepared.smiles, k, cache, workers)
    return {**result, "seconds": time.perf_counter() - start, **base, **_peak_mb()}


def _child(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           **(env or {})}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise TapweightError(f"{' '.join(args[:3])}... failed: {done.stderr.strip().splitlines()[-1:]}")
    return done


def _stage_child(name: str, corpus: str, cache: Path, workers: int, k: int = 0) -> dict:
    done = _child(["-m", "bench.corpus", name, corpus, str(cache), str(workers), str(k)])
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_step(corpus: str, cache: Path, out: Path) -> dict:
    """Stage 4: ``tapweight pretrain`` to the end of step 1, image cache empty."""
    for made in (cache / "images", out):  # a cold image cache; the run folder of a --reuse
        shutil.rmtree(made, ignore_errors=True)
    start = time.perf_counter()
    _child(["-m", "tapweight", "pretrain", "mol", "--corpus", corpus, "--steps", "1", "--preset", "cpu",
            "--quiet", "--out", str(out), "--set", f"mol.cache_dir={cache}"])
    seconds = time.perf_counter() - start
    log = (out / "log.txt").read_text()
    return {"seconds": seconds, "command": f"tapweight pretrain mol --corpus {corpus} --steps 1 --preset cpu",
            "corpus_from_cache": "corpus_prepared: read from the cache" in log,
            "kmeans_in_run": "k-means of" in log}


def stream(corpus: str, cache: Path, workers: int, size: int, batch: int, batches: int) -> list[dict]:
    """Stage 5: images/s of the level I batch stream, cold then warm image cache."""
    from tapweight.method.batches import BatchStream
    from tapweight_mol.corpus import read_corpus
    from tapweight_mol.data import Depictions, MolCorpus, corpus_collate
    from tapweight_mol.store import ImageStore

    smiles = read_corpus(corpus, workers, cache).smiles
    rows = []
    for w in range(workers + 1):
        images = cache / f"stream-{w}"
        dataset = MolCorpus(smiles, Depictions(ImageStore(images, size)), cache)
        for state in ("cold", "warm"):
            batches_of = BatchStream(dataset, batch, corpus_collate, seed=w, num_workers=w)
            start = time.perf_counter()
            next(batches_of)  # worker start-up and the first batch
            first = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(batches - 1):
                next(batches_of)
            rows.append({"cache": state, "workers": w, "first_batch_s": first,
                         "images_per_s": (batches - 1) * batch / (time.perf_counter() - start)})
            del batches_of
            gc.collect()  # the stream's loader (a reference cycle) ends its workers before the next forks
        shutil.rmtree(images, ignore_errors=True)
    return rows


def run(corpus: Path, workers: int, size: int, batch: int, batches: int, keep: Path | None,
        reuse: Path | None = None) -> dict:
    """Stages 1–5 of the module docstring on ``corpus``; with ``reuse`` (an earlier result of
    the same corpus whose ``keep`` folder holds the cache of stages 1–3), stages 4–5 only."""
    if not corpus.is_file():
        raise TapweightError(f"corpus '{corpus}' does not exist: write one with python -m tapweight_mol.moses")
    if reuse is not None and keep is None:
        raise TapweightError("--reuse needs --keep: the folder of the run whose stages 1-3 it reuses")
    folder = Path(keep or tempfile.mkdtemp(prefix="bench-corpus-"))
    cache = folder / "cache"
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    path = str(corpus.resolve())
    result = {"corpus": path, "workers": workers, "started": started}
    if reuse is not None:
        earlier = json.loads(reuse.read_text())
        if earlier["corpus"] != path:
            raise TapweightError(f"--reuse {reuse} measured {earlier['corpus']}, not {path}")
        result.update({key: earlier[key] for key in ("prepare", "fingerprints", "kmeans")},
                      stages_1_3_from=str(reuse), stages_1_3_started=earlier["started"])
    else:
        result["prepare"] = _stage_child("prepare", path, cache, workers)
        result["fingerprints"] = _stage_child("fingerprints", path, cache, workers)
        result["kmeans"] = {k: _stage_child("kmeans", path, cache, workers, k) for k in KS}
    result["first_step"] = first_step(path, cache, folder / "pretrain")
    result["stream"] = {"image_size": size, "batch": batch, "batches": batches,
                        "rows": stream(path, cache, workers, size, batch, batches)}
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def table(result: dict) -> str:
    """The stages as text, one line each."""
    n = result["prepare"]["molecules"]
    lines = [f"{result['corpus']}: {n} molecules ({result['prepare']['invalid']} invalid), "
             f"{result['workers']} worker processes"]

    def line(name: str, r: dict, extra: str = "") -> None:
        lines.append(f"  {name:<24} {r['seconds']:8.1f} s   peak {r['peak_mb']:6.0f} MB, "
                     f"{r['peak_mb'] - r['base_mb']:5.0f} above the {r['base_mb']:.0f} MB before it "
                     f"(workers {r['workers_peak_mb']:4.0f} MB){extra}")

    line("prepare (canonicalize)", result["prepare"])
    line("MACCS fingerprints", result["fingerprints"],
         f"   {result['fingerprints']['distinct_fingerprints']} distinct")
    for k, r in result["kmeans"].items():
        line(f"k-means k={k}", r, f"   {r['clusters']} clusters")
    if "stages_1_3_from" in result:
        lines.append(f"  (stages 1-3 from {result['stages_1_3_from']}, started {result['stages_1_3_started']})")
    step = result["first_step"]
    lines.append(f"  {'first step (cold images)':<24} {step['seconds']:8.1f} s   ({step['command']})")
    s = result["stream"]
    for r in s["rows"]:
        lines.append(f"  stream {r['cache']:<4} {r['workers']} workers   {r['images_per_s']:8.1f} images/s "
                     f"(first batch {r['first_batch_s']:.1f} s; {s['image_size']} px, batch {s['batch']})")
    load = result["load_average"]
    lines.append(f"  load average before {load['before']}, after {load['after']}")
    return "\n".join(lines)


if __name__ == "__main__":  # one of stages 1–3 in a child: python -m bench.corpus STAGE CORPUS CACHE WORKERS K
    name, corpus_file, cache_dir, n_workers, k_value = sys.argv[1:6]
    print(json.dumps(stage(name, corpus_file, Path(cache_dir), int(n_workers), int(k_value))))
