"""Leak-free training samples from an interactions table.

For each target interaction (user u, item i, time t):
- user_history: u's last N interactions with timestamp strictly < t, oldest first;
- item_history: i's last N interactions by other users with timestamp strictly < t;
- user_avg / item_avg: means over ALL strictly earlier interactions (not only the last N).
Targets with no earlier user or item interaction, or with fewer than `min_history`
history entries in total, are dropped and counted.

Columnar (polars + numpy) and linear in the number of rows x N: no per-row scan of
the whole table. Interactions must already be de-duplicated per (user, item).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

INTERACTION_COLUMNS = {"user_id": pl.Utf8, "item_id": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64, "review": pl.Utf8}


@dataclass
class SampleStats:
    targets: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def normalise_interactions(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the canonical column types; a missing review becomes ''."""
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in df.columns]
    if missing:
        raise ValueError(f"interactions table lacks column(s) {missing}; needs user_id, item_id, rating, timestamp[, review]")
    if "review" not in df.columns:
        df = df.with_columns(pl.lit("").alias("review"))
    return df.with_columns(
        [pl.col(c).cast(t) for c, t in INTERACTION_COLUMNS.items()]
    ).with_columns(pl.col("review").fill_null(""))


def _history_windows(keys: np.ndarray, ts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by (key, ts): [start, end) of the last n strictly earlier rows of the same key,
    plus the group start (so that end - group_start counts ALL earlier rows)."""
    rows = len(keys)
    idx = np.arange(rows)
    new_group = np.ones(rows, dtype=bool)
    new_group[1:] = keys[1:] != keys[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    # first row of the run of equal timestamps within the group: rows at the same time are not "earlier"
    new_time = new_group.copy()
    new_time[1:] |= ts[1:] != ts[:-1]
    end = np.maximum.accumulate(np.where(new_time, idx, 0))
    start = np.maximum(group_start, end - n)
    return start, end, group_start


def _gather_lists(source: pl.DataFrame, start: np.ndarray, end: np.ndarray, cols: list[str], name: str) -> pl.Series:
    """List column: for each row r, the structs of source rows start[r]..end[r]-1 (in order).

    Built straight from offsets as an Arrow list array: no group-by, no join."""
    import pyarrow as pa

    lengths = end - start
    offsets = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_idx = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
    values = source.select(cols)[flat_idx].to_struct(name).to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), values))


def build_samples(
    interactions: pl.DataFrame,
    history_user: int = 10,
    history_item: int = 10,
    min_history: int = 5,
    targets: pl.DataFrame | None = None,
    history_reviews: bool = True,
) -> tuple[pl.DataFrame, SampleStats]:
    """Samples for every interaction (or for the (user_id, item_id) pairs in `targets`).

    With history_reviews=False, history entries carry `ref` (the row of the interaction in
    the table passed in) instead of a copy of its review text: at scale the copies would
    dominate memory and disk (each review appears in up to 2N histories)."""
    df = normalise_interactions(interactions).with_row_index("_row")
    by_user = df.sort(["user_id", "timestamp", "item_id"])
    u_keys = by_user["user_id"].to_numpy()
    u_start, u_end, u_group = _history_windows(u_keys, by_user["timestamp"].to_numpy(), history_user)
    by_item = df.sort(["item_id", "timestamp", "user_id"])
    i_start, i_end, i_group = _history_windows(by_item["item_id"].to_numpy(), by_item["timestamp"].to_numpy(), history_item)

    def prefix(frame: pl.DataFrame) -> np.ndarray:
        p = np.zeros(len(frame) + 1)
        np.cumsum(frame["rating"].to_numpy(), out=p[1:])
        return p

    pu, pi = prefix(by_user), prefix(by_item)
    u_count = u_end - u_group
    i_count = i_end - i_group
    with np.errstate(invalid="ignore", divide="ignore"):
        u_avg = np.where(u_count > 0, (pu[u_end] - pu[u_group]) / np.maximum(u_count, 1), np.nan)
        i_avg = np.where(i_count > 0, (pi[i_end] - pi[i_group]) / np.maximum(i_count, 1), np.nan)

    user_part = by_user.select("_row").with_columns(
        pl.Series("user_avg", u_avg), pl.Series("user_count", u_count),
        pl.Series("_us", u_start), pl.Series("_ue", u_end))
    item_part = by_item.select("_row").with_columns(
        pl.Series("item_avg", i_avg), pl.Series("item_count", i_count),
        pl.Series("_is", i_start), pl.Series("_ie", i_end))
    merged = df.join(user_part, on="_row").join(item_part, on="_row").sort("_row")
    if targets is not None:
        merged = merged.join(targets.select(["user_id", "item_id"]).unique(), on=["user_id", "item_id"], how="semi")

    stats = SampleStats(targets=len(merged))
    hist_total = (pl.min_horizontal(pl.col("user_count"), history_user) + pl.min_horizontal(pl.col("item_count"), history_item))
    reasons = [
        ("no_user_history", pl.col("user_count") == 0),
        ("no_item_history", pl.col("item_count") == 0),
        ("history_below_min", hist_total < min_history),
    ]
    keep = pl.lit(True)
    for reason, cond in reasons:
        hit = merged.filter(keep & cond).height
        stats.dropped[reason] = hit
        keep = keep & ~cond
    merged = merged.filter(keep)
    stats.kept = len(merged)

    text = ["review"] if history_reviews else ["ref"]
    by_user, by_item = (f.with_columns(pl.col("_row").alias("ref")) for f in (by_user, by_item))
    user_hist = _gather_lists(by_user, merged["_us"].to_numpy(), merged["_ue"].to_numpy(),
                              ["item_id", "rating", "timestamp", *text], "user_history")
    item_hist = _gather_lists(by_item, merged["_is"].to_numpy(), merged["_ie"].to_numpy(),
                              ["user_id", "rating", "timestamp", *text], "item_history")
    extra = [c for c in df.columns if c not in INTERACTION_COLUMNS and c != "_row"]
    out = merged.select(["user_id", "item_id", "timestamp", "rating", "user_avg", "item_avg",
                         "user_count", "item_count", *extra]).with_columns(user_hist, item_hist)
    return out, stats


def split_leave_last_out(samples: pl.DataFrame, n_valid: int = 1, n_test: int = 1) -> dict[str, pl.DataFrame]:
    """Per user, the last target goes to test, the one before to valid, the rest to train."""
    ranked = samples.with_columns(
        pl.col("timestamp").rank("ordinal", descending=True).over("user_id").alias("_rank_from_end"))
    test = ranked.filter(pl.col("_rank_from_end") <= n_test)
    valid = ranked.filter((pl.col("_rank_from_end") > n_test) & (pl.col("_rank_from_end") <= n_test + n_valid))
    train = ranked.filter(pl.col("_rank_from_end") > n_test + n_valid)
    return {k: v.drop("_rank_from_end").sort(["timestamp", "user_id"]) for k, v in
            {"train": train, "valid": valid, "test": test}.items()}


def attach_reviews(sample: dict, reviews: list[str] | None) -> dict:
    """Fill in review texts of history entries that carry a `ref` instead of the text."""
    if reviews is None:
        return sample
    out = dict(sample)
    for key in ("user_history", "item_history"):
        out[key] = [h if "review" in h else {**h, "review": reviews[h["ref"]]} for h in sample[key]]
    return out
