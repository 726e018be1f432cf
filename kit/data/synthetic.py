"""The embedded default data: a deterministic synthetic book catalog.

Ratings come from a documented taste-match model, so the best achievable error is known:

    mu(u, i) = 3 + b_u + q_i + 0.9 [genre liked] - 1.0 [genre disliked]
                 + 0.7 |attrs(i) & liked(u)| - 0.8 |attrs(i) & disliked(u)|
    rating   = clip(round(lo + (mu - 1 + eps) (hi - lo) / 4), lo, hi),   eps ~ N(0, noise^2)

b_u ~ N(0, 0.3^2) is the user's bias, q_i ~ N(0, 0.4^2) the item's quality. The scale
[lo, hi] is the caller's (data.synthetic.scale): the taste model lives on 1-5 and is
stretched onto it, so a 1-10 catalog has ratings over all of 1-10. Users pick
items with a mild preference for what they like (as real users do). Review texts
follow the rating and name the traits that drove it. A teacher (kit.data.teacher) writes
a reference answer in the four-tag format from what a prompt shows, used for format
priming (a RecOne-style cold start).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from kit.data.teacher import Reasoned, reasoned_answer

GENRES = ["Mystery", "Science Fiction", "Fantasy", "Romance", "History", "Cooking", "Self-Help", "Horror"]
TRAITS = ["fast-paced", "slow-burn", "humorous", "dark", "illustrated", "lengthy", "concise", "technical",
          "heartwarming", "twisty", "beginner-friendly", "poetic"]
_ADJ = ["Silent", "Golden", "Hidden", "Last", "Broken", "Quiet", "Burning", "Winter", "Lost", "Crimson", "Paper", "Distant"]
_NOUN = ["Harbor", "Garden", "Engine", "Kingdom", "Letter", "Kitchen", "Map", "Orchard", "Signal", "Tower", "River", "Atlas"]
_AUTHORS = ["A. Marlow", "J. Okafor", "L. Brandt", "S. Ikeda", "R. Castell", "M. Novak", "T. Aalto", "P. Quinn"]
_OPENERS = {5: "Absolutely loved it.", 4: "Really enjoyed this one.", 3: "It was okay overall.",
            2: "Not really for me.", 1: "Did not like it at all."}
_BASE_TIME = 1_600_000_000  # 2020-09-13, seconds
_DAY = 86_400


@dataclass
class Tastes:
    liked_genres: list[str]
    disliked_genre: str
    liked_traits: list[str]
    disliked_traits: list[str]
    bias: float


@dataclass
class SyntheticCatalog:
    items: pl.DataFrame          # item_id, title, categories, brand, price, features, description
    interactions: pl.DataFrame   # user_id, item_id, rating, timestamp, review, latent_mean
    tastes: dict[str, Tastes]
    noise: float                 # std of the noise on the rating scale
    scale: tuple[float, float]   # the ratings' scale: the data owns it

    def expected(self, user_id: str, item_id: str) -> float:
        """mu(u, i) on the rating scale: the noise-free latent score."""
        row = self._item_row(item_id)
        return to_scale(latent_mean(self.tastes[user_id], row["categories"][0], row["features"], row["quality"]),
                        self.scale)

    def _item_row(self, item_id: str) -> dict:
        if not hasattr(self, "_item_index"):
            self._item_index = {r["item_id"]: r for r in self.items.iter_rows(named=True)}
        return self._item_index[item_id]

    def reference_answer(self, sample: dict, review_chars: int) -> str:
        """A four-tag answer for a sample (format priming, a RecOne-style cold start), written by
        the teacher in kit.data.teacher from what the prompt shows: the tastes the user's reviews
        state, each target aspect decided by the sentence that states it, and a rating that follows
        from the answer's own arithmetic (never the generator's hidden score)."""
        return self.reasoned(sample, review_chars).text

    def reasoned(self, sample: dict, review_chars: int) -> Reasoned:
        target = self._item_row(sample["item_id"])
        return reasoned_answer(sample, [target["categories"][0], *target["features"]], self.scale, review_chars)


def latent_mean(t: Tastes, genre: str, traits: list[str], quality: float) -> float:
    return (3.0 + t.bias + quality + 0.9 * (genre in t.liked_genres) - 1.0 * (genre == t.disliked_genre)
            + 0.7 * sum(x in t.liked_traits for x in traits) - 0.8 * sum(x in t.disliked_traits for x in traits))


def to_scale(mu: float, scale: tuple[float, float]) -> float:
    """A score of the 1-5 taste model on the scale [lo, hi]."""
    return scale[0] + (mu - 1.0) * (scale[1] - scale[0]) / 4.0


def _review(rng: np.random.Generator, stars: int, t: Tastes, genre: str, traits: list[str]) -> str:
    parts = [_OPENERS[stars]]
    good = [x for x in traits if x in t.liked_traits]
    bad = [x for x in traits if x in t.disliked_traits]
    if genre in t.liked_genres:
        parts.append(f"I always enjoy a good {genre.lower()} read.")
    if genre == t.disliked_genre:
        parts.append(f"{genre} is rarely my thing.")
    if good:
        parts.append(f"Loved that it was {' and '.join(good)}.")
    if bad:
        parts.append(f"Too {' and '.join(bad)} for my taste.")
    if not good and not bad:
        parts.append(rng.choice(["Nothing special either way.", "Readable enough.", "Fine for a weekend."]))
    return " ".join(parts)


def make_catalog(n_users: int, n_items: int, interactions_per_user: int, noise: float, seed: int,
                 scale: tuple[float, float]) -> SyntheticCatalog:
    """Build the catalog with ratings on `scale`; the same arguments always give the same tables."""
    lo, hi = float(scale[0]), float(scale[1])
    if not (lo < hi and lo == int(lo) and hi == int(hi)):
        raise ValueError(f"data.synthetic.scale: two whole numbers, low first (got {scale})")
    stretch = (hi - lo) / 4.0
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n_items):
        genre = GENRES[rng.integers(len(GENRES))]
        traits = sorted(rng.choice(TRAITS, size=3, replace=False).tolist(), key=TRAITS.index)
        title = f"The {_ADJ[rng.integers(len(_ADJ))]} {_NOUN[rng.integers(len(_NOUN))]}"
        if rng.random() < 0.5:
            title += f" {['Vol. 2', 'Revisited', 'Stories', 'Chronicles', 'Notes'][rng.integers(5)]}"
        items.append({
            "item_id": f"B{k:05d}",
            "title": title,
            "categories": [genre],
            "brand": _AUTHORS[rng.integers(len(_AUTHORS))],
            "price": float(round(rng.uniform(4, 30), 2)),
            "features": traits,
            "description": f"A {', '.join(traits[:-1])} and {traits[-1]} {genre.lower()} book.",
            "quality": float(rng.normal(0, 0.4)),
        })
    tastes: dict[str, Tastes] = {}
    rows = []
    for u in range(n_users):
        uid = f"U{u:04d}"
        genres = rng.choice(GENRES, size=3, replace=False).tolist()
        traits = rng.choice(TRAITS, size=4, replace=False).tolist()
        t = Tastes(liked_genres=genres[:2], disliked_genre=genres[2], liked_traits=traits[:2],
                   disliked_traits=traits[2:], bias=float(rng.normal(0, 0.3)))
        tastes[uid] = t
        mus = np.array([latent_mean(t, it["categories"][0], it["features"], it["quality"]) for it in items])
        weights = np.exp(0.8 * (mus - mus.max()))
        chosen = rng.choice(n_items, size=min(interactions_per_user, n_items), replace=False, p=weights / weights.sum())
        time = _BASE_TIME + int(rng.integers(0, 200)) * _DAY
        for k in chosen:
            time += int(rng.integers(1, 20)) * _DAY + int(rng.integers(0, _DAY))
            it = items[k]
            rating = int(min(hi, max(lo, round(to_scale(mus[k] + rng.normal(0, noise), (lo, hi))))))
            stars = int(min(5, max(1, round(1 + (rating - lo) / stretch))))  # the review's tone, on 1-5
            rows.append({"user_id": uid, "item_id": it["item_id"], "rating": float(rating), "timestamp": time,
                         "review": _review(rng, stars, t, it["categories"][0], it["features"]),
                         "latent_mean": to_scale(float(mus[k]), (lo, hi))})
    return SyntheticCatalog(items=pl.DataFrame(items), interactions=pl.DataFrame(rows), tastes=tastes,
                            noise=noise * stretch, scale=(lo, hi))


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def rating_distribution(mu: float, noise: float, scale: tuple[float, float]) -> np.ndarray:
    """P(rating = k) for k in the scale, under the generator's rounding-and-clipping rule."""
    lo, hi = int(scale[0]), int(scale[1])
    ks = np.arange(lo, hi + 1)
    if noise <= 0:
        p = np.zeros(len(ks))
        p[int(min(hi, max(lo, round(mu)))) - lo] = 1.0
        return p
    upper = np.array([1.0 if k == hi else _phi((k + 0.5 - mu) / noise) for k in ks])
    lower = np.array([0.0 if k == lo else _phi((k - 0.5 - mu) / noise) for k in ks])
    return upper - lower


def noise_floor(latent_means: np.ndarray | list[float], noise: float, scale: tuple[float, float]) -> dict[str, float]:
    """Best achievable RMSE and MAE for a predictor that knows mu exactly (oracle)."""
    ks = np.arange(int(scale[0]), int(scale[1]) + 1)
    sq, ab = [], []
    for mu in latent_means:
        p = rating_distribution(float(mu), noise, scale)
        mean = float((p * ks).sum())
        median = float(ks[np.searchsorted(np.cumsum(p), 0.5)])
        sq.append(float((p * (ks - mean) ** 2).sum()))
        ab.append(float((p * np.abs(ks - median)).sum()))
    return {"rmse": math.sqrt(float(np.mean(sq))), "mae": float(np.mean(ab))}
