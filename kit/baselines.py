"""Classical rating-prediction baselines on the same split, through Surprise.

Fitted on the training interactions (every interaction that is not a valid/test target)
and scored on exactly the samples the LLM is scored on, with the same metrics code.
"""
from __future__ import annotations

import polars as pl

from kit.metrics import rating_metrics


def training_interactions(interactions: pl.DataFrame, held_out: list[pl.DataFrame]) -> pl.DataFrame:
    """Interactions minus the held-out targets (matched on user and item)."""
    out = interactions
    for frame in held_out:
        out = out.join(frame.select(["user_id", "item_id"]), on=["user_id", "item_id"], how="anti")
    return out


def _surprise_predictions(algo, train: pl.DataFrame, frame: pl.DataFrame, scale: tuple[float, float]) -> list[float]:
    from surprise import Dataset, Reader

    reader = Reader(rating_scale=scale)
    data = Dataset.load_from_df(train.select(["user_id", "item_id", "rating"]).to_pandas(), reader)
    algo.fit(data.build_full_trainset())
    return [algo.predict(u, i).est for u, i in zip(frame["user_id"], frame["item_id"])]


def mean_predictions(train: pl.DataFrame, frame: pl.DataFrame) -> dict[str, list[float]]:
    """Averages: no fitting, instant at any scale (the run summary uses these)."""
    g = float(train["rating"].mean())
    user_mean = dict(train.group_by("user_id").agg(pl.col("rating").mean()).iter_rows())
    item_mean = dict(train.group_by("item_id").agg(pl.col("rating").mean()).iter_rows())
    return {
        "global mean": [g] * len(frame),
        "user mean": [user_mean.get(u, g) for u in frame["user_id"]],
        "item mean": [item_mean.get(i, g) for i in frame["item_id"]],
        "user earlier average": frame["user_avg"].to_list(),
        "item earlier average": frame["item_avg"].to_list(),
    }


def baseline_predictions(train: pl.DataFrame, frame: pl.DataFrame, scale: tuple[float, float],
                         seed: int = 0, fitted: bool = True) -> dict[str, list[float]]:
    """Predictions of each baseline for the rows of `frame` (fitted: add BaselineOnly and SVD)."""
    out = mean_predictions(train, frame)
    if not fitted:  # the run summary's path: no scikit-surprise needed
        return out
    from surprise import SVD, BaselineOnly

    return {
        **out,
        "user+item bias (BaselineOnly)": _surprise_predictions(
            BaselineOnly(bsl_options={"method": "als", "n_epochs": 10}, verbose=False), train, frame, scale),
        "matrix factorisation (SVD)": _surprise_predictions(
            SVD(n_factors=32, n_epochs=30, random_state=seed), train, frame, scale),
    }


def baseline_metrics(train: pl.DataFrame, frame: pl.DataFrame, scale: tuple[float, float], seed: int = 0,
                     fitted: bool = True) -> dict:
    truths = frame["rating"].to_list()
    fallback = frame["user_avg"].to_list()
    return {name: rating_metrics(truths, preds, fallback, scale)
            for name, preds in baseline_predictions(train, frame, scale, seed, fitted).items()}
