"""Scaffold splits on the real BBBP: deterministic, 8:1:1, no scaffold in two splits."""

import numpy as np
import pytest

from tapweight_mol import moleculenet
from tapweight_mol.splits import random_scaffold_split, scaffold_of, scaffold_split
from tests.mol.conftest import BBBP


class Cfg:
    data = str(BBBP)


@pytest.fixture(scope="module")
def bbbp():
    table = moleculenet.load("bbbp", Cfg())
    return table, [scaffold_of(s) for s in table.inputs]


def _check_partition(split, n, scaffolds):
    parts = [split.train, split.val, split.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))  # disjoint, complete
    sets = [{scaffolds[i] for i in p} for p in parts]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    return [len(p) / n for p in parts]


def test_scaffold_split_is_deterministic_8_1_1_and_scaffold_disjoint(bbbp):
    table, scaffolds = bbbp
    split = scaffold_split(table, 0)
    again = scaffold_split(table, 7)  # the seed does not matter
    for a, b in zip([split.train, split.val, split.test], [again.train, again.val, again.test]):
        assert np.array_equal(a, b)
    fractions = _check_partition(split, len(table.inputs), scaffolds)
    assert fractions[0] == pytest.approx(0.8, abs=0.01)
    assert fractions[1] == pytest.approx(0.1, abs=0.02) and fractions[2] == pytest.approx(0.1, abs=0.02)


def test_largest_scaffold_groups_go_to_train(bbbp):
    table, scaffolds = bbbp
    split = scaffold_split(table, 0)
    values, counts = np.unique(scaffolds, return_counts=True)
    biggest = values[np.argsort(-counts)[:5]]
    train = {scaffolds[i] for i in split.train}
    assert all(s in train for s in biggest)
    assert "" in train  # acyclic molecules share the empty scaffold, the largest group
    # every test group is no larger than the smallest group placed before the cut-off
    test_sizes = [counts[values == s][0] for s in {scaffolds[i] for i in split.test}]
    assert max(test_sizes) <= 3


def test_random_scaffold_split_depends_on_the_seed_only(bbbp):
    table, scaffolds = bbbp
    a, b, c = (random_scaffold_split(table, s) for s in (1, 1, 2))
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)
    fractions = _check_partition(a, len(table.inputs), scaffolds)
    assert fractions[0] <= 0.8 and fractions[1] <= 0.1 + 1e-9
    assert fractions[0] > 0.7
