"""A known-answer check of learned weights: an objective that fits labels drawn at random
(``core.random_labels``) cannot help the task, and TapWeight must take its weight away."""

import pandas as pd
from tapweight.runner import resolve, run

OBJECTIVES = "objectives=[tabular.mfr,tabular.denoise,tabular.scarf,core.random_labels]"


def test_tapweight_moves_weight_off_an_objective_that_fits_random_labels(tmp_path):
    job = resolve("tabular", "digits", "cpu", sets=[OBJECTIVES, "steps=300", "final.epochs=1"])
    run(job, tmp_path / "run", quiet=True)
    weights = pd.read_csv(tmp_path / "run" / "seed0" / "weights.csv")
    assert weights["random_labels"].iloc[0] == 0.25  # uniform to start with
    assert weights["random_labels"].iloc[-1] < 0.1, weights.iloc[-1].to_dict()
    # and the real objectives keep the weight it lost
    assert weights[["mfr", "denoise", "scarf"]].iloc[-1].sum() > 0.9
