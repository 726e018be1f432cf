"""Expected-rating decoding and calibration: the rating distribution after the rating tag, read
with the real tokenizer and model (tiny, random weights), and what is declined."""
from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    from kit.config import load_config
    from kit.model import load_adapter

    cfg = load_config("smoke", [f"model.name={tiny_model_dir}", "model.dtype=float32"])
    return load_adapter(cfg.model, None)


def _prompt(tokenizer) -> str:
    from kit.prompts import render_chat

    return render_chat(tokenizer, [{"role": "user", "content": "Rate this book from 1 to 5."}])


def test_each_whole_star_is_one_token_and_what_is_not_is_declined(smol_tokenizer):
    from kit.decoding import rating_tokens

    five = rating_tokens(smol_tokenizer, (1, 5))
    assert five.declined is None and list(five.ids) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [smol_tokenizer.decode([t]) for t in five.ids.values()] == ["1", "2", "3", "4", "5"]
    ten = rating_tokens(smol_tokenizer, (1, 10))
    assert ten.ids == {} and "the rating 10 is 2 tokens" in ten.declined
    assert "not whole stars" in rating_tokens(smol_tokenizer, (0.5, 5)).declined


def test_the_prefix_ends_at_the_last_rating_tag():
    from kit.decoding import rating_prefix

    assert rating_prefix("<analyze_user>a</analyze_user> ... <rate>4</rate>", "reczero").endswith("... <rate>")
    assert rating_prefix("no tag at all", "reczero") is None
    assert rating_prefix("<answer>3</answer>", "think_answer") == "<answer>"


def test_next_token_probabilities_match_a_plain_forward_pass_and_ignore_padding(base):
    import torch

    from kit.decoding import rating_tokens
    from kit.model import next_token_probs

    tok = base.tokenizer
    ids = list(rating_tokens(tok, (1, 5)).ids.values())
    short = _prompt(tok) + "<rate>"
    long = _prompt(tok) + "<analyze_user>" + "likes long sagas " * 12 + "</analyze_user><rate>"
    alone = next_token_probs(base, [short], ids)[0]
    batched = next_token_probs(base, [long, short], ids, batch_size=2)
    enc = tok(short, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        plain = torch.softmax(base.model(**enc).logits[0, -1].float(), -1)[ids].tolist()
    assert alone == pytest.approx(plain, rel=1e-4, abs=1e-7)
    assert batched[1] == pytest.approx(plain, rel=1e-3, abs=1e-6)  # left padding does not change it
    assert 0 < sum(alone) <= 1 and batched[0] != pytest.approx(batched[1])


def test_expected_ratings_are_distributions_on_the_scale(base):
    from kit.decoding import expected_ratings

    prompt = _prompt(base.tokenizer)
    dists, declined = expected_ratings(base, [prompt, prompt, None], ["<rate>4</rate>", "no tag", "<rate>2"],
                                       (1, 5), "reczero")
    assert declined is None and dists[1] is None and dists[2] is None  # no tag; prompt not sent
    d = dists[0]
    assert sum(d["probs"].values()) == pytest.approx(1, abs=1e-4) and set(d["probs"]) == {"1", "2", "3", "4", "5"}
    assert 1 <= d["expected"] <= 5 and 0 < d["mass"] <= 1
    assert d["expected"] == pytest.approx(sum(int(k) * p for k, p in d["probs"].items()), abs=1e-4)
    none, why = expected_ratings(base, [prompt], ["<rate>"], (1, 10), "reczero")
    assert none == [None] and "2 tokens" in why


def test_a_malformed_answer_has_no_expected_rating_and_stays_malformed():
    from kit.evaluate import with_decoding

    dist = {"probs": {"1": 0.0, "2": 0.0, "3": 0.5, "4": 0.5, "5": 0.0}, "expected": 3.5, "mass": 0.9}
    bad = with_decoding({"prediction": None, "valid": False, "rating": 5.0}, dist, "expected")
    assert bad["prediction"] is None and bad["expected_rating"] is None and bad["rating_probs"]["4"] == 0.5
    good = with_decoding({"prediction": 4.0, "valid": True, "rating": 4.0}, dist, "expected")
    assert (good["prediction"], good["greedy_rating"], good["expected_rating"]) == (3.5, 4.0, 3.5)
    greedy = with_decoding({"prediction": 4.0, "valid": True, "rating": 4.0}, dist, "greedy")
    assert greedy["prediction"] == 4.0 and greedy["expected_rating"] == 3.5


def test_decode_expected_needs_the_distribution():
    from kit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="decode=expected needs evaluation.rating_distribution=true"):
        load_config("smoke", ["evaluation.decode=expected", "evaluation.rating_distribution=false"])


def test_calibration_of_known_distributions():
    from kit.report import calibration

    sure = [{"rating": float(t), "rating_probs": {f"{r}": float(r == t) for r in range(1, 6)}} for t in (1, 3, 5, 5)]
    c = calibration(sure)
    assert c["ece"] == pytest.approx(0) and c["p_true"] == 1 and c["pairs"] == 4
    uniform = [{"rating": float(t), "rating_probs": {f"{r}": 0.2 for r in range(1, 6)}} for t in (1, 2, 3, 4, 5)]
    u = calibration(uniform)
    assert u["p_true"] == pytest.approx(0.2) and u["ece"] == pytest.approx(0)  # right on average
    wrong = [{"rating": 1.0, "rating_probs": {"1": 0.0, "5": 1.0}}] * 3
    w = calibration(wrong)
    assert w["ece"] == pytest.approx(1.0) and w["p_true"] == 0
    assert calibration([{"rating": 3.0}]) is None and not math.isnan(w["bins"][0]["freq"])


def test_greedy_and_expected_are_scored_on_the_same_pairs():
    from kit.evaluate import score_predictions

    recs = []
    for k, truth in enumerate([4, 4, 3, 5, 2, 4, 3, 5]):
        probs = {"1": 0.0, "2": 0.0, "3": 0.3, "4": 0.7, "5": 0.0}
        recs.append({"rating": float(truth), "user_avg": 3.0, "prediction": 4.0, "valid": True, "greedy_rating": 4.0,
                     "expected_rating": 3.7, "rating_probs": probs})
    recs.append({"rating": 5.0, "user_avg": 3.0, "prediction": None, "valid": False, "greedy_rating": None})
    m = score_predictions(recs, (1, 5))
    g, e = m["decodes"]["greedy"], m["decodes"]["expected"]
    assert g["n"] == e["n"] == 9 and g["valid_n"] == e["valid_n"] == 8
    assert g["mae"] == pytest.approx((0 + 0 + 1 + 1 + 2 + 0 + 1 + 1 + 2) / 9)  # the malformed one: fallback 3
    assert e["mae"] == pytest.approx((0.3 + 0.3 + 0.7 + 1.3 + 1.7 + 0.3 + 0.7 + 1.3 + 2) / 9)
    assert m["decode_comparison"]["a"] == "expected rating" and m["calibration"]["pairs"] == 8
