"""The embedded synthetic catalog: deterministic, documented, with a correct noise floor."""
from __future__ import annotations

import numpy as np
import pytest

from kit.data.samples import build_samples
from kit.data.synthetic import latent_mean, make_catalog, noise_floor, rating_distribution
from kit.rewards import parse_answer


def test_deterministic_for_a_seed():
    a, b = make_catalog(30, 20, 8, seed=3), make_catalog(30, 20, 8, seed=3)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert not a.interactions.equals(make_catalog(30, 20, 8, seed=4).interactions)


def test_ratings_follow_the_documented_model():
    cat = make_catalog(60, 40, 10, noise=0.0, seed=1)
    for r in cat.interactions.iter_rows(named=True):
        mu = cat.expected(r["user_id"], r["item_id"])
        assert abs(mu - r["latent_mean"]) < 1e-12
        assert r["rating"] == min(5, max(1, round(mu)))  # noise 0: rating is the rounded latent


def test_reviews_agree_with_ratings():
    cat = make_catalog(40, 30, 10, seed=2)
    openers = {5: "Absolutely loved", 1: "Did not like"}
    for r in cat.interactions.iter_rows(named=True):
        if int(r["rating"]) in openers:
            assert r["review"].startswith(openers[int(r["rating"])])


def test_noise_floor_matches_simulation():
    rng = np.random.default_rng(0)
    mus = rng.uniform(1, 5, size=200)
    floor = noise_floor(mus, 0.6)
    draws = np.clip(np.round(mus[:, None] + rng.normal(0, 0.6, size=(200, 4000))), 1, 5)
    mean_pred = np.array([(rating_distribution(m, 0.6) * np.arange(1, 6)).sum() for m in mus])
    sim_rmse = np.sqrt(((draws - mean_pred[:, None]) ** 2).mean())
    assert floor["rmse"] == pytest.approx(sim_rmse, rel=0.02)
    assert rating_distribution(3.2, 0.5).sum() == pytest.approx(1.0)
    assert noise_floor([3.0], 0.0) == {"rmse": 0.0, "mae": 0.0}


def test_reference_answers_are_valid_and_rate_the_latent():
    cat = make_catalog(30, 30, 10, seed=5)
    samples, _ = build_samples(cat.interactions, 3, 3, 1)
    for s in samples.head(40).iter_rows(named=True):
        answer = cat.reference_answer(s)
        parsed = parse_answer(answer)
        assert parsed.valid, parsed.problems
        assert parsed.rating == min(5, max(1, round(cat.expected(s["user_id"], s["item_id"]))))
        assert "[pos]" in parsed.sections["analyze item"] and "[neg]" in parsed.sections["analyze item"]


def test_latent_mean_terms():
    from kit.data.synthetic import Tastes
    t = Tastes(["Mystery"], "Horror", ["dark"], ["lengthy"], bias=0.1)
    assert latent_mean(t, "Mystery", ["dark", "lengthy"], 0.2) == pytest.approx(3 + 0.1 + 0.2 + 0.9 + 0.7 - 0.8)
    assert latent_mean(t, "Horror", [], 0.0) == pytest.approx(3 + 0.1 - 1.0)
