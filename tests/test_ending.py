"""The words a run ends with: a verdict that matches the numbers, and honest about their size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.ending import install_ok_line, next_steps, next_test_pairs, verdict
from kit.report import compare


def m(mae: float, valid: int, n: int = 16) -> dict:
    return {"mae": mae, "rmse": mae + 0.2, "valid_n": valid, "n": n, "mae_ci": [mae - 0.2, mae + 0.2]}


BASELINES = {"global mean": {"mae": 0.699}, "item mean": {"mae": 0.567}, "user mean": {"mae": 0.663}}


def errors(mae: float, n: int, spread: float, seed: int) -> np.ndarray:
    """n absolute errors with this mean (per-pair spread as real answers have)."""
    e = np.abs(np.random.default_rng(seed).normal(0, spread, n))
    return e - e.mean() + mae


def paired_tests(after: np.ndarray, earlier: dict[str, np.ndarray], baseline: tuple[str, np.ndarray]) -> list[dict]:
    """The comparisons kit.train stores, made by the real paired test."""
    out = [compare("after GRPO", after, label, e).as_dict() for label, e in earlier.items()]
    return out + [compare("after GRPO", after, f"baseline: {baseline[0]}", baseline[1]).as_dict()]


def three_rounds(maes: tuple[float, float, float], n: int, valid_after: int, spread: float) -> dict:
    """A summary as kit.train writes it: base (no valid answer), primed (all valid), after GRPO,
    the averages as baselines (item mean at 0.567), and the paired tests on n pairs."""
    base, primed, after = maes
    return {"eval_before": m(base, 0, n), "eval_primed": m(primed, n, n), "eval_after": m(after, valid_after, n),
            "baselines": BASELINES,
            "comparisons": paired_tests(errors(after, n, spread, 1),
                                        {"base model": errors(base, n, spread, 2),
                                         "after SFT": errors(primed, n, spread, 3)},
                                        ("item mean", errors(0.567, n, spread, 4)))}


def test_small_changes_on_16_pairs_are_called_undetectable():
    """The bf16 machine's cpu-demo: 0.663 (base, no valid answer) -> 0.812 primed -> 0.750 after GRPO."""
    text = verdict(three_rounds((0.663, 0.812, 0.750), n=16, valid_after=16, spread=0.6))
    assert text.startswith("Verdict: no detectable change in the rating error: MAE 0.663 (base model) -> 0.750")
    assert "difference +0.087 [" in text and "0/16 valid answers -> 16/16" in text
    assert "its MAE is that of the fallback" in text  # no valid base answer: say what its MAE means
    assert "against it, GRPO: no detectable difference (difference -0.062" in text
    assert "Against item mean on the same pairs (MAE 0.567): after GRPO no detectable difference (difference +0.183" in text
    assert "With 16 pairs the MAE after training is known to 0.55-0.95 (95%)" in text
    assert "\n" not in text  # one paragraph


def test_a_large_change_is_called_by_its_name():
    """The float32 EPYC run of the issue (0.688 -> 0.951), here on 64 pairs so that it is detectable."""
    text = verdict(three_rounds((0.663, 0.688, 0.951), n=64, valid_after=60, spread=0.3))
    assert text.startswith("Verdict: training made the rating error worse")
    assert "GRPO: worse (difference +0.263" in text and "after GRPO worse (difference +0.384" in text


def test_a_real_improvement_on_many_pairs():
    after = errors(0.60, 200, 0.5, 1)
    summary = {"eval_before": m(0.90, 150, 200), "eval_after": m(0.60, 198, 200),
               "baselines": {"SVD": {"mae": 0.75}, "broken": {"mae": None}},
               "comparisons": paired_tests(after, {"base model": errors(0.90, 200, 0.5, 2)},
                                        ("SVD", errors(0.75, 200, 0.5, 3)))}
    text = verdict(summary)
    assert text.startswith("Verdict: training helped: MAE 0.900 (base model) -> 0.600")
    assert "difference -0.300 [" in text and "fallback" not in text
    assert "Against SVD on the same pairs (MAE 0.750): after GRPO better (difference -0.150" in text


def test_without_evaluation_the_verdict_says_it_cannot_tell():
    assert "cannot say whether training helped" in verdict({"baselines": BASELINES})
    only_after = verdict({"eval_after": m(0.8, 12)})
    assert "no evaluation before training" in only_after and "12/16 valid" in only_after
    assert "no paired test on record" in verdict({"eval_before": m(0.9, 3), "eval_after": m(0.8, 12)})


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


def test_each_round_against_each_baseline_names_its_p_value():
    n = 128
    after, sft = errors(0.52, n, 0.5, 1), errors(0.55, n, 0.5, 2)
    item, svd = errors(0.71, n, 0.5, 3), errors(0.72, n, 0.5, 4)
    comparisons = [compare("after GRPO", after, "after SFT", sft).as_dict()]
    for label, e in (("after SFT", sft), ("after GRPO", after)):
        comparisons += [compare(label, e, "baseline: item earlier average", item).as_dict(),
                        compare(label, e, "baseline: matrix factorisation (SVD)", svd).as_dict()]
    summary = {"eval_primed": m(0.55, n, n), "eval_after": m(0.52, n, n), "comparisons": comparisons,
               "baselines": {"item earlier average": {"mae": 0.71}, "matrix factorisation (SVD)": {"mae": 0.72}}}
    text = verdict(summary)
    assert "Against item earlier average on the same pairs (MAE 0.710): after GRPO better (difference -0.190" in text
    assert "; after SFT better (difference -0.160" in text
    assert "Against matrix factorisation (SVD) on the same pairs (MAE 0.720): after GRPO better" in text
    assert text.count("p=") == 5 and "\n" not in text


def test_the_suggested_test_pairs_follow_what_the_run_already_scored():
    assert next_test_pairs("valid", 128) == 128  # the held-out check, same size
    assert next_test_pairs("test", 128) == 256  # already on test: more pairs, a tighter interval
