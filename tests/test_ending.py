"""The words a run ends with: a verdict that matches the numbers, and honest about their size."""
from __future__ import annotations

from pathlib import Path

import pytest

from kit.ending import install_ok_line, next_steps, noise_band, verdict


def m(mae: float, valid: int, n: int = 16) -> dict:
    return {"mae": mae, "rmse": mae + 0.2, "valid_n": valid, "n": n}


BASELINES = {"global mean": {"mae": 0.699}, "item mean": {"mae": 0.567}, "user mean": {"mae": 0.663}}


def test_noise_band_is_about_0_2_at_16_pairs_and_shrinks_with_more():
    assert noise_band(16) == pytest.approx(0.2)
    assert noise_band(64) == pytest.approx(0.1)
    assert noise_band(200) < 0.06


def test_small_changes_on_16_pairs_are_called_inconclusive():
    """The bf16 machine's cpu-demo: 0.663 (base, no valid answer) -> 0.812 primed -> 0.750 after GRPO."""
    text = verdict({"eval_before": m(0.663, 0), "eval_primed": m(0.812, 16), "eval_after": m(0.750, 16),
                    "baselines": BASELINES})
    assert text.startswith("Verdict: training did not change the rating error by more than the noise")
    assert "MAE 0.663 (the base model) -> 0.750" in text and "0.087 higher (worse), within the noise" in text
    assert "0/16 valid answers -> 16/16" in text
    assert "its MAE is that of the fallback" in text  # no valid base answer: say what its MAE means
    assert "GRPO then moved MAE 0.062 lower (better), within the noise" in text
    assert "item mean, has MAE 0.567" in text and "level with it (+0.183, within the noise)" in text
    assert "With 16 pairs a difference under ~0.20 MAE is not conclusive" in text
    assert "\n" not in text  # one paragraph


def test_a_large_change_is_called_by_its_name():
    """The float32 EPYC run of the issue: GRPO took MAE from 0.688 to 0.951 (14/16 valid)."""
    text = verdict({"eval_before": m(0.663, 0), "eval_primed": m(0.688, 16), "eval_after": m(0.951, 14),
                    "baselines": BASELINES})
    assert text.startswith("Verdict: training made the rating error worse")
    assert "GRPO then moved MAE 0.263 higher (worse)." in text  # beyond the noise: no hedge
    assert "is worse by 0.384" in text


def test_a_real_improvement_on_many_pairs():
    text = verdict({"eval_before": m(0.90, 150, 200), "eval_after": m(0.60, 198, 200),
                    "baselines": {"SVD": {"mae": 0.75}, "broken": {"mae": None}}})
    assert text.startswith("Verdict: training helped: MAE 0.900 (the base model) -> 0.600")
    assert "0.300 lower (better);" in text and "fallback" not in text
    assert "SVD, has MAE 0.750: the trained model beats it by 0.150" in text
    assert "With 200 pairs a difference under ~0.06 MAE" in text


def test_without_evaluation_the_verdict_says_it_cannot_tell():
    assert "cannot say whether training helped" in verdict({"baselines": BASELINES})
    only_after = verdict({"eval_after": m(0.8, 12)})
    assert "no evaluation before training" in only_after and "12/16 valid" in only_after


def test_next_steps_name_the_folder_and_the_commands(tmp_path):
    lines = next_steps(tmp_path / "run", on_gpu=False, seconds_per_pair=5.0, pairs=48)
    text = "\n".join(lines)
    assert f"-m kit.evaluate --run {tmp_path / 'run'} --split test --limit 48" in text
    assert "(~ 4.0 min here)" in text and f"-m kit.app --run {tmp_path / 'run'}" in text
    assert str(Path(tmp_path / "run" / "adapter")) in text
    assert "--limit" not in "\n".join(next_steps(tmp_path, on_gpu=True))


def test_install_ok_only_for_a_random_model():
    assert "gibberish" in install_ok_line("tiny-random") and "install OK" in install_ok_line("tiny-random")
    assert install_ok_line("smollm2-135m") is None
