"""Regression targets standardised on the train rows, checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from tapweight import Split, Table
from tapweight.method.targets import TargetScaler, standardize_targets

# three label columns: spread-out values with a missing one, a constant, a single label
LABELS = np.array([[-11.0, 2.0, np.nan], [3.5, 2.0, 7.0], [np.nan, 2.0, np.nan],
                   [-0.25, 2.0, np.nan], [-25.4, 2.0, np.nan]])


def test_statistics_are_scikit_learns_with_nan_and_constant_columns():
    scaler = TargetScaler.fit(LABELS, ("a", "b", "c"))
    reference = StandardScaler().fit(LABELS)
    assert scaler.mean == pytest.approx(reference.mean_)
    assert scaler.std == pytest.approx(reference.scale_)  # a constant column keeps std 1
    standardised = scaler.transform(LABELS)
    expected = reference.transform(LABELS)
    assert np.array_equal(np.isnan(standardised), np.isnan(LABELS))
    assert np.allclose(standardised[~np.isnan(LABELS)], expected[~np.isnan(LABELS)], atol=1e-6)
    assert np.isfinite(standardised[:, 1]).all()  # std 0 divides by 1, not by 0


def test_a_column_without_training_labels_is_left_as_it_is():
    scaler = TargetScaler.fit(np.array([[1.0, np.nan], [3.0, np.nan]]), ("a", "b"))
    assert scaler.mean.tolist() == [2.0, 0.0] and scaler.std.tolist() == [1.0, 1.0]


def test_inverse_restores_original_units_and_the_file_round_trips(tmp_path):
    scaler = TargetScaler.fit(LABELS, ("a", "b", "c"))
    assert np.allclose(scaler.inverse(scaler.transform(LABELS)), LABELS, equal_nan=True, atol=1e-5)
    one = TargetScaler.fit(LABELS[:, :1], ("a",))
    assert one.inverse(np.array([0.0, 1.0])) == pytest.approx([one.mean[0], one.mean[0] + one.std[0]])
    scaler.save(tmp_path / "target_scaler.json")
    loaded = TargetScaler.load(tmp_path / "target_scaler.json")
    assert loaded.columns == ("a", "b", "c")
    assert np.array_equal(loaded.mean, scaler.mean) and np.array_equal(loaded.std, scaler.std)


def test_only_the_train_rows_set_the_statistics():
    table = Table(list("vwxyz"), LABELS[:, :1], ("a",), "here")
    split = Split(train=np.array([0, 1, 3]), val=np.array([2]), test=np.array([4]))
    scaled, scaler = standardize_targets(table, split)
    train = LABELS[[0, 1, 3], 0]
    assert scaler.mean[0] == pytest.approx(train.mean()) and scaler.std[0] == pytest.approx(train.std())
    assert scaled.labels[4, 0] == pytest.approx((-25.4 - train.mean()) / train.std())
    assert scaled.inputs is table.inputs and scaled.source == "here"
