"""Metrics against hand-computed values; malformed answers use the fallback, never the truth."""
from __future__ import annotations

import math

import polars as pl
import pytest

from kit.baselines import baseline_predictions, training_interactions
from kit.metrics import rating_metrics


def test_metrics_by_hand():
    m = rating_metrics(truths=[5, 3, 1, 4], preds=[4, 3, None, 2.5], fallbacks=[9, 9, 2.0, 9], scale=(1, 5))
    # errors: 1, 0, |2-1| = 1 (fallback), 1.5
    assert m["n"] == 4 and m["valid_n"] == 3
    assert m["mae"] == pytest.approx((1 + 0 + 1 + 1.5) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 2.25) / 4))
    assert m["valid_mae"] == pytest.approx((1 + 0 + 1.5) / 3)
    assert m["format_failure_rate"] == 0.25
    assert m["exact_match"] == 0.25 and m["within_one"] == 0.75
    assert m["mae_by_true_rating"] == {"1": 1.0, "3": 0.0, "4": 1.5, "5": 1.0}


def test_failure_is_never_scored_with_the_truth():
    m = rating_metrics([4.0], [None], [4.0 + 0.7], (1, 5))
    assert m["mae"] == pytest.approx(0.7) and m["format_failure_rate"] == 1.0
    assert math.isnan(m["valid_mae"])
    # the fallback is clipped into the scale
    assert rating_metrics([5.0], [None], [9.0], (1, 5))["mae"] == 0.0
    assert rating_metrics([1.0], [None], [-3.0], scale=(1, 5))["mae"] == 0.0


def test_lengths_must_match():
    with pytest.raises(ValueError):
        rating_metrics([1, 2], [1], [1, 2], (1, 5))


def test_baselines_on_a_tiny_fixture():
    interactions = pl.DataFrame({
        "user_id": ["a", "a", "b", "b", "c", "a"], "item_id": ["x", "y", "x", "z", "y", "z"],
        "rating": [5.0, 3.0, 1.0, 2.0, 4.0, 4.0], "timestamp": [1, 2, 3, 4, 5, 6]})
    test = pl.DataFrame({"user_id": ["a"], "item_id": ["z"], "rating": [4.0], "user_avg": [4.0], "item_avg": [2.0]})
    train = training_interactions(interactions, [test])
    assert len(train) == 5 and ("a", "z") not in set(zip(train["user_id"], train["item_id"]))
    preds = baseline_predictions(train, test, (1.0, 5.0))
    assert preds["global mean"] == [pytest.approx(15 / 5)]
    assert preds["user mean"] == [pytest.approx(4.0)]     # a: 5, 3
    assert preds["item mean"] == [pytest.approx(2.0)]     # z: 2 (by b)
    assert preds["user earlier average"] == [4.0]
    for name in ("user+item bias (BaselineOnly)", "matrix factorisation (SVD)"):
        assert 1.0 <= preds[name][0] <= 5.0
