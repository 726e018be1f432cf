"""The embedded synthetic catalog: deterministic, documented, with a correct noise floor."""
from __future__ import annotations

import re

import numpy as np
import pytest

from kit.data.samples import build_samples
from kit.data.synthetic import latent_mean, make_catalog, noise_floor, rating_distribution
from kit.rewards import is_consistent, parse_answer

S5 = (1, 5)


def test_deterministic_for_a_seed():
    a, b = make_catalog(30, 20, 8, 0.5, 3, S5), make_catalog(30, 20, 8, 0.5, 3, S5)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert not a.interactions.equals(make_catalog(30, 20, 8, 0.5, 4, S5).interactions)


def test_ratings_follow_the_documented_model():
    cat = make_catalog(60, 40, 10, 0.0, 1, S5)
    for r in cat.interactions.iter_rows(named=True):
        mu = cat.expected(r["user_id"], r["item_id"])
        assert abs(mu - r["latent_mean"]) < 1e-12
        assert r["rating"] == min(5, max(1, round(mu)))  # noise 0: rating is the rounded latent


def test_reviews_agree_with_ratings():
    cat = make_catalog(40, 30, 10, 0.5, 2, S5)
    openers = {5: "Absolutely loved", 1: "Did not like"}
    for r in cat.interactions.iter_rows(named=True):
        if int(r["rating"]) in openers:
            assert r["review"].startswith(openers[int(r["rating"])])


def test_noise_floor_matches_simulation():
    rng = np.random.default_rng(0)
    mus = rng.uniform(1, 5, size=200)
    floor = noise_floor(mus, 0.6, S5)
    draws = np.clip(np.round(mus[:, None] + rng.normal(0, 0.6, size=(200, 4000))), 1, 5)
    mean_pred = np.array([(rating_distribution(m, 0.6, S5) * np.arange(1, 6)).sum() for m in mus])
    sim_rmse = np.sqrt(((draws - mean_pred[:, None]) ** 2).mean())
    assert floor["rmse"] == pytest.approx(sim_rmse, rel=0.02)
    assert rating_distribution(3.2, 0.5, S5).sum() == pytest.approx(1.0)
    assert noise_floor([3.0], 0.0, S5) == {"rmse": 0.0, "mae": 0.0}


def test_latent_mean_terms():
    from kit.data.synthetic import Tastes
    t = Tastes(["Mystery"], "Horror", ["dark"], ["lengthy"], bias=0.1)
    assert latent_mean(t, "Mystery", ["dark", "lengthy"], 0.2) == pytest.approx(3 + 0.1 + 0.2 + 0.9 + 0.7 - 0.8)
    assert latent_mean(t, "Horror", [], 0.0) == pytest.approx(3 + 0.1 - 1.0)


def test_the_scale_is_the_generators_ratings_span_it():
    cat = make_catalog(60, 40, 12, 0.5, 0, (1, 10))
    ratings = cat.interactions["rating"]
    assert cat.scale == (1.0, 10.0) and ratings.min() == 1 and ratings.max() == 10
    assert ratings.n_unique() == 10  # the whole scale is used, not a stretched 1-5
    means = cat.interactions["latent_mean"].to_numpy()
    assert np.abs(ratings.to_numpy() - means).mean() < 2.5  # ratings follow the latent on the same scale
    samples, _ = build_samples(cat.interactions, 10, 3, 1)
    for s in samples.head(40).iter_rows(named=True):  # the teacher's steps stretch with the scale: +1.1 / -2.2
        parsed = parse_answer(cat.reference_answer(s, 400), (1, 10))
        assert parsed.valid and is_consistent(parsed, (1, 10))
        assert all(step in ("+1.1", "-2.2") for step in re.findall(r"\] ([+-][\d.]+)", parsed.sections["analyze item"]))
    floor = noise_floor(means[:50], cat.noise, cat.scale)
    assert 0 < floor["mae"] and cat.noise == pytest.approx(0.5 * 9 / 4)


def test_one_to_five_is_unchanged_by_the_scale_plumbing():
    cat = make_catalog(30, 20, 8, 0.0, 1, S5)
    for r in cat.interactions.head(50).iter_rows(named=True):
        assert r["rating"] == min(5, max(1, round(cat.expected(r["user_id"], r["item_id"]))))
