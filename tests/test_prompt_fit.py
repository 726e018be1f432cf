"""Every prompt sent for an answer fits model.max_seq_length - max_new_tokens: histories are
trimmed oldest first, and what cannot fit is refused and counted (evaluation and app)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def setting(tiny_model_dir, smol_tokenizer):
    """The smoke data, with each test row's prompt length in full and with no history at all."""
    from kit.config import load_config
    from kit.data import fit_prompt, load_task_data

    cfg = load_config("smoke", [f"model.name={tiny_model_dir}"])
    data = load_task_data(cfg)
    rows = list(data.split("test", 8, seed=0).iter_rows(named=True))
    full = [fit_prompt(r, data, cfg, smol_tokenizer, 10**9).tokens for r in rows]
    bare = [fit_prompt(r, data, cfg, smol_tokenizer, 0).tokens for r in rows]
    return cfg, data, rows, full, bare


def _without_oldest(row, data, cfg, tokenizer, k):
    from kit.data import sample_messages
    from kit.prompts import render_chat

    sample = data.with_reviews(row)
    entries = sorted((h["timestamp"], key, i) for key in ("user_history", "item_history")
                     for i, h in enumerate(sample[key]))
    gone = {(key, i) for _, key, i in entries[:k]}
    kept = {key: [h for i, h in enumerate(sample[key]) if (key, i) not in gone]
            for key in ("user_history", "item_history")}
    return render_chat(tokenizer, sample_messages({**sample, **kept}, data, cfg))


def test_history_is_trimmed_oldest_first_just_enough(setting, smol_tokenizer):
    from kit.data import fit_prompt

    cfg, data, rows, full, bare = setting
    row, budget = rows[0], (full[0] + bare[0]) // 2
    fitted = fit_prompt(row, data, cfg, smol_tokenizer, budget)
    assert 0 < fitted.dropped < len(row["user_history"]) + len(row["item_history"])
    assert fitted.text == _without_oldest(row, data, cfg, smol_tokenizer, fitted.dropped)
    assert fitted.tokens == len(smol_tokenizer(fitted.text, add_special_tokens=False)["input_ids"]) <= budget
    one_less = _without_oldest(row, data, cfg, smol_tokenizer, fitted.dropped - 1)
    assert len(smol_tokenizer(one_less, add_special_tokens=False)["input_ids"]) > budget  # no more than needed
    whole = fit_prompt(row, data, cfg, smol_tokenizer, full[0])
    assert whole.dropped == 0 and whole.tokens == full[0]
    assert fit_prompt(row, data, cfg, smol_tokenizer, bare[0] - 1).text is None


def test_evaluation_trims_refuses_and_counts(setting, tiny_model_dir):
    from kit.config import load_config
    from kit.evaluate import length_note, predict, score_predictions
    from kit.model import load_adapter

    _, data, rows, full, bare = setting
    budget = max(bare) - 1  # the rows with the longest bare prompt cannot fit; the others fit trimmed
    new = 8
    cfg = load_config("smoke", [f"model.name={tiny_model_dir}", f"model.max_seq_length={budget + new}",
                                f"evaluation.max_new_tokens={new}", "prompt.max_prompt_tokens=32",
                                "grpo.max_completion_length=8"])
    frame = data.split("test", 8, seed=0)
    records = predict(load_adapter(cfg.model, None), frame, data, cfg)
    refused = [r for r, b in zip(records, bare) if b > budget]
    trimmed = [r for r, b in zip(records, bare) if b <= budget]
    assert refused and trimmed
    for r in refused:  # never sent, never scored with the truth
        assert r["prompt_too_long"] > budget and r["prediction"] is None and not r["valid"] and r["completion"] == ""
    assert all(r["history_dropped"] > 0 and "prompt_too_long" not in r for r in trimmed)
    metrics = score_predictions(records, data.scale)
    assert (metrics["prompts_trimmed"], metrics["prompts_too_long"]) == (len(trimmed), len(refused))
    assert metrics["format_failure_rate"] >= len(refused) / len(records)
    note = length_note(metrics, cfg)
    assert f"{len(trimmed)} prompts had" in note and f"{len(refused)} could not fit" in note and str(budget) in note


def test_app_trims_or_refuses_with_a_message(setting, tiny_model_dir):
    from kit.app import AppInputError, build_state, fitted_prompt, stream_answer, trim_note

    _, _, rows, full, bare = setting
    budget = (full[0] + bare[0]) // 2
    state = build_state(config="smoke", overrides=[f"model.name={tiny_model_dir}",
                                                   f"model.max_seq_length={budget + 8}",
                                                   "prompt.max_prompt_tokens=32", "grpo.max_completion_length=8",
                                                   "evaluation.max_new_tokens=8"])
    sample = state.data.with_reviews(rows[0])
    fitted = fitted_prompt(state, sample, 8)
    assert fitted.dropped > 0 and fitted.tokens <= budget
    assert trim_note(fitted).startswith(f"{fitted.dropped} oldest history entries left out")
    assert list(stream_answer(state, sample, False, 0.0, 8, 0))  # generates from the trimmed prompt
    with pytest.raises(AppInputError, match="lower max new tokens") as err:
        fitted_prompt(state, sample, budget + 8 - bare[0] + 1)
    assert "\n" not in str(err.value)


def test_a_window_with_no_room_for_a_prompt_is_refused_before_loading():
    from kit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="evaluation.max_new_tokens .* leaves no room for a prompt"):
        load_config("smoke", ["evaluation.max_new_tokens=1024"])
