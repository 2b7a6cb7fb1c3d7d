"""AUROC of a score against ground truth, checked against independent computations on planted scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_schema.ranking import auroc, hazard_auroc


def pair_count(danger: np.ndarray, positive: np.ndarray) -> float:
    """The definition, pair by pair: P(a dangerous frame scores above a safe one), ties counting half."""
    wins = 0.0
    pairs = 0
    for p, n in itertools.product(danger[positive], danger[~positive]):
        wins += 1.0 if p > n else 0.5 if p == n else 0.0
        pairs += 1
    return wins / pairs


@pytest.mark.parametrize("levels", [None, 4])  # continuous scores, and scores with many ties
def test_auroc_agrees_with_the_pair_count_and_sklearn(levels):
    rng = np.random.default_rng(3)
    positive = rng.random(300) < 0.25
    danger = rng.normal(size=300) + 0.8 * positive  # planted separation
    if levels:
        danger = np.round(danger * levels / 3)
    expected = pair_count(danger, positive)
    assert 0.6 < expected < 0.9
    assert auroc(danger, positive) == pytest.approx(expected, abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert auroc(danger, positive) == pytest.approx(sklearn.roc_auc_score(positive, danger), abs=1e-12)


def test_auroc_extremes_and_undefined_cases():
    assert auroc([0.1, 0.2, 0.9, 0.8], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.1, 0.2], [False, False, True, True]) == 0.0
    assert auroc([0.5] * 4, [False, True, False, True]) == 0.5
    assert auroc([0.1, 0.2], [True, True]) is None
    assert auroc([0.1, np.nan], [True, False]) is None
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        auroc([0.1, 0.2, 0.3], [True, False])


def test_hazard_auroc_compares_each_kind_with_the_safe_frames_only():
    # safety: high on safe frames; the pedestrian frames score low, the car frames as safe as the safe ones
    safety = np.array([0.9, 0.8, 0.1, 0.2, 0.85, 0.95])
    kinds = {
        "critical_agent": np.array([0, 0, 1, 1, 0, 0], bool),
        "vehicle_close": np.array([0, 0, 0, 0, 1, 1], bool),
        "any": np.array([0, 0, 1, 1, 1, 1], bool),
    }
    found = hazard_auroc(safety, kinds)
    assert found["critical_agent"] == 1.0  # the car frames are left out of this comparison
    assert found["vehicle_close"] == pytest.approx(pair_count(-np.array([0.9, 0.8, 0.85, 0.95]), np.array([0, 0, 1, 1], bool)))
    assert found["any"] == pytest.approx(pair_count(-safety, kinds["any"]))
