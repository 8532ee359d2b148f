"""Simple baselines for a regression task, on exactly the data and split ``tapweight run`` uses.

``python -m bench baselines mol freesolv --data FILE`` loads the task through tapweight's
registry (its own loader, its own split: the scaffold split for MoleculeNet) and scores,
with the task's metrics in the targets' own units:

- ``train mean``: the training targets' mean, predicted for every example (what a model
  that learned nothing scores);
- ``rf morgan``: scikit-learn's random forest on Morgan fingerprints (RDKit, radius 2,
  2048 bits), the usual fingerprint baseline of MoleculeNet;
- ``rf descriptors``: the same forest on RDKit's 2D descriptors (``CalcMolDescriptors``).

The forests are fitted once per seed; a deterministic split (scaffold) is the same for all.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from tapweight.errors import TapweightError
from tapweight.job.report import summarize
from tapweight.job.runner import resolve
from tapweight.job.seed import split_table
from tapweight.method.metrics import score
from tapweight.plugin.specs import Split, TaskSpec

RADIUS, BITS = 2, 2048


def morgan(smiles: list[str]) -> np.ndarray:
    """Morgan (ECFP4-like) bit vectors ``[N, 2048]``."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS, fpSize=BITS)
    return np.stack([generator.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles]).astype(np.float32)


def descriptors(smiles: list[str]) -> np.ndarray:
    """RDKit's 2D descriptors ``[N, D]``; values that are not finite become NaN (the forest
    treats them as missing)."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    rows = [list(Descriptors.CalcMolDescriptors(Chem.MolFromSmiles(s)).values()) for s in smiles]
    values = np.array(rows, dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values.astype(np.float32)


#: domain -> featurizers of its inputs for the forests
FEATURES = {"mol": {"morgan": morgan, "descriptors": descriptors}}


def forest(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray, seed: int, trees: int) -> np.ndarray:
    """A random forest per label column (fitted on that column's present labels); predictions ``[N, T]``."""
    out = np.empty((len(x), y_train.shape[1]))
    for t in range(y_train.shape[1]):
        present = ~np.isnan(y_train[:, t])
        model = RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=1)
        out[:, t] = model.fit(x_train[present], y_train[present, t]).predict(x)
    return out


def scores(task: TaskSpec, labels: np.ndarray, split: Split, preds: np.ndarray) -> dict[str, float]:
    """Val metric and test metrics of predictions ``preds`` ``[N, T]`` for every row."""
    out = {"val": score(task.metric, preds[split.val], labels[split.val])}
    for m in (task.metric, *task.extra_metrics):
        out["test" if m == task.metric else f"test_{m}"] = score(m, preds[split.test], labels[split.test])
    return out


def run(domain: str, task: str, data: str, seeds: list[int], trees: int) -> dict:
    """Every baseline's val and test scores per seed, their mean ± std, and wall times."""
    job = resolve(domain, task, "cpu", options={"data": data})
    spec = job.task
    if spec.loss != "mse":
        raise TapweightError(f"{domain}/{task} is a {spec.loss} task; the baselines are for "
                             "regression (mse) tasks")
    table = job.registry.get("datasets", spec.dataset, domain).load(job.cfg)
    y = table.labels.astype(np.float64)  # [N, T]
    features, featurize_s = {}, {}
    for name, featurize in FEATURES.get(domain, {}).items():
        start = time.perf_counter()
        features[name] = featurize(list(table.inputs))
        featurize_s[name] = time.perf_counter() - start
    results = {"train mean": {"seeds": {}}} | {f"rf {name}": {"seeds": {}} for name in features}
    for seed in seeds:
        split = split_table(job, replace(job.cfg, seed=seed), table)
        mean = np.nanmean(y[split.train], axis=0)  # [T]
        results["train mean"]["seeds"][seed] = scores(spec, y, split, np.tile(mean, (len(y), 1)))
        for name, x in features.items():
            start = time.perf_counter()
            preds = forest(x[split.train], y[split.train], x, seed, trees)
            results[f"rf {name}"]["seeds"][seed] = {**scores(spec, y, split, preds),
                                                    "fit_s": time.perf_counter() - start}
    for result in results.values():
        result.update(summarize(result["seeds"]))
    return {"command": "baselines", "domain": domain, "task": task, "data": table.source,
            "rows": len(table.inputs), "split": job.cfg.split or spec.split,
            "sizes": {k: len(getattr(split, k)) for k in ("train", "val", "test")},
            "metric": spec.metric, "seeds": seeds, "trees": trees, "featurize_s": featurize_s,
            "baselines": results}
