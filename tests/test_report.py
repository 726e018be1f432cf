"""kit.report: intervals and paired tests that say when a difference is real, checked on cases
whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from kit.report import (bootstrap_interval, compare, comparison_line, metrics_table, reference_rows, score_records, scored_predictions,
                        summary_table)


def test_a_constant_error_has_a_zero_width_interval():
    ci = bootstrap_interval([0.5] * 40, seed=1)
    assert ci["mae_ci"] == pytest.approx([0.5, 0.5]) and ci["rmse_ci"] == pytest.approx([0.5, 0.5])


def test_the_interval_is_seeded_covers_the_mae_and_narrows_with_more_pairs():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0, 1, 25), rng.normal(0, 1, 2500)
    assert bootstrap_interval(small, seed=3) == bootstrap_interval(small, seed=3)
    lo, hi = bootstrap_interval(small, seed=3)["mae_ci"]
    assert lo < np.abs(small).mean() < hi
    lo2, hi2 = bootstrap_interval(large, seed=3)["mae_ci"]
    assert (hi2 - lo2) < (hi - lo) / 5  # ~1/sqrt(n): 10x the pairs' square root


def test_shuffled_predictions_are_not_better_and_the_real_ones_are():
    rng = np.random.default_rng(7)
    truths = rng.integers(1, 6, 200).astype(float)
    good = np.clip(truths + rng.normal(0, 0.5, 200).round(), 1, 5)
    shuffled = rng.permutation(good)
    e_good, e_shuffled = np.abs(good - truths), np.abs(shuffled - truths)
    worse = compare("shuffled", e_shuffled, "model", e_good, seed=0)
    assert worse.outcome == "worse" and worse.delta > 0 and worse.p < 0.01
    better = compare("model", e_good, "shuffled", e_shuffled, seed=0)
    assert better.outcome == "better" and better.ci[1] < 0


def test_identical_errors_and_a_handful_of_pairs_are_no_detectable_difference():
    same = compare("a", [1.0, 0.0, 2.0], "b", [1.0, 0.0, 2.0])
    assert (same.outcome, same.p, same.ci) == ("no detectable difference", 1.0, (0.0, 0.0))
    # five pairs, each better by a full star: the exact sign-flip test gives p = 2 / 2^5
    five = compare("a", [0.0] * 5, "b", [1.0] * 5)
    assert five.p == pytest.approx(2 / 32) and five.outcome == "no detectable difference"
    six = compare("a", [0.0] * 6, "b", [1.0] * 6)
    assert six.p == pytest.approx(2 / 64) and six.outcome == "better"
    assert "a vs b: **better**, MAE -1.000" in comparison_line(six.as_dict())
    with pytest.raises(ValueError, match="same non-empty pairs"):
        compare("a", [1.0], "b", [1.0, 2.0])


def test_malformed_answers_are_scored_with_the_earlier_average_not_the_truth():
    records = [{"rating": 5.0, "prediction": None, "user_avg": 7.0},
               {"rating": 2.0, "prediction": 3.0, "user_avg": 2.0}]
    assert scored_predictions(records, (1, 5)) == [5.0, 3.0]  # 7 clipped to the scale's top
    records[0]["user_avg"] = 3.0
    m = score_records(records, (1, 5), seed=0)
    assert m["mae"] == pytest.approx(1.5) and m["valid_n"] == 1
    assert m["mae_ci"][0] <= m["mae"] <= m["mae_ci"][1]


def test_reference_rows_score_the_baselines_on_the_same_pairs():
    from kit.config import load_config
    from kit.data import load_task_data

    data = load_task_data(load_config("smoke"))
    frame = data.split("valid", 30, seed=0)
    refs = reference_rows(data, frame, seed=0, fitted=False)
    assert set(refs.metrics) >= {"global mean", "item mean", "user earlier average"}
    for name, m in refs.metrics.items():
        assert len(refs.errors[name]) == len(frame) == m["n"]
        assert m["mae"] == pytest.approx(float(np.mean(refs.errors[name])))
        assert m["mae_ci"][0] <= m["mae"] <= m["mae_ci"][1]
    assert 0 < refs.noise_floor["mae"] < min(m["mae"] for m in refs.metrics.values())


def test_tables_show_the_interval_beside_each_figure():
    m = {"n": 16, "mae": 0.8125, "rmse": 1.0, "mae_ci": [0.62, 1.01], "rmse_ci": [0.8, 1.2], "valid_n": 16,
         "valid_mae": 0.8125, "format_failure_rate": 0.0, "exact_match": 0.3, "within_one": 0.8, "valid_rmse": 1.0}
    assert "| 0.8125 [0.62, 1.01] | 1.0000 [0.80, 1.20] |" in metrics_table({"m": m})
    table = summary_table({"after GRPO": m}, {"item mean": {"mae": 0.5, "rmse": 0.7}}, {"mae": 0.3, "rmse": 0.5})
    assert "| after GRPO | 16/16 | 0.812 [0.62, 1.01] |" in table
    assert "| baseline: item mean | - | 0.500 | 0.700 | - |" in table and "| oracle (noise floor) | - | 0.300 |" in table


def test_the_app_shows_the_runs_figures_with_intervals_and_verdict(tmp_path):
    from kit.app import run_scores
    from kit.io import atomic_write_json

    assert "--run RUN_DIR" in run_scores(None) and "no summary.json" in run_scores(tmp_path)
    after = {"n": 16, "mae": 0.75, "rmse": 0.95, "mae_ci": [0.5, 1.0], "rmse_ci": [0.7, 1.2], "valid_n": 16,
             "valid_mae": 0.75}
    before = {**after, "mae": 0.9, "valid_n": 0}
    summary = {"eval_before": before, "eval_after": after, "baselines": {"item mean": {"mae": 0.6, "rmse": 0.8}},
               "comparisons": [compare("after GRPO", [0.75] * 16, "base model", [0.9] * 16).as_dict()]}
    atomic_write_json(tmp_path / "summary.json", summary)
    text = run_scores(tmp_path)
    assert "| after GRPO | 16/16 | 0.750 [0.50, 1.00] |" in text
    assert "Verdict: training helped" in text and "p=" in text
