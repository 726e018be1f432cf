"""Leak-free training samples from an interactions table.

For each target interaction (user u, item i, time t):
- user_history: u's last N interactions with timestamp strictly < t, oldest first;
- item_history: i's last N interactions by other users with timestamp strictly < t;
- user_avg / item_avg: means over ALL strictly earlier interactions (not only the last N).
Targets with no earlier user or item interaction, or with fewer than `min_history`
history entries in total, are dropped and counted.

Columnar (polars + numpy) and linear in the number of rows x N: no per-row scan of
the whole table. Interactions must already be de-duplicated per (user, item).
`plan_samples` settles everything but the history lists, which dominate memory at scale;
`SamplePlan.blocks` then builds them a block of targets at a time (same result as one block).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import polars as pl

INTERACTION_COLUMNS = {"user_id": pl.Utf8, "item_id": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64, "review": pl.Utf8}


@dataclass
class SampleStats:
    targets: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def normalise_interactions(df: pl.DataFrame, with_review: bool = True) -> pl.DataFrame:
    """Cast to the canonical column types; a missing review becomes ''. Without `with_review`
    the review column is dropped (histories that carry `ref` never read it)."""
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in df.columns]
    if missing:
        raise ValueError(f"interactions table lacks column(s) {missing}; needs user_id, item_id, rating, timestamp[, review]")
    if not with_review:
        return df.drop("review", strict=False).with_columns(
            [pl.col(c).cast(t) for c, t in INTERACTION_COLUMNS.items() if c != "review"])
    if "review" not in df.columns:
        df = df.with_columns(pl.lit("").alias("review"))
    return df.with_columns(
        [pl.col(c).cast(t) for c, t in INTERACTION_COLUMNS.items()]
    ).with_columns(pl.col("review").fill_null(""))


WINDOWS = ["_us", "_ue", "_is", "_ie"]  # [start, end) of each target's rows in by_user / by_item
BLOCK_ROWS = 200_000  # targets whose history lists are built at a time


def _history_windows(new_group: np.ndarray, ts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by (key, ts) (`new_group` marks each key's first row): [start, end) of the last n
    strictly earlier rows of the same key, plus the group start (so that end - group_start counts ALL
    earlier rows)."""
    rows = len(new_group)
    idx = np.arange(rows)
    group_start = np.maximum.accumulate(np.where(new_group, idx, 0))
    # first row of the run of equal timestamps within the group: rows at the same time are not "earlier"
    new_time = new_group.copy()
    new_time[1:] |= ts[1:] != ts[:-1]
    end = np.maximum.accumulate(np.where(new_time, idx, 0))
    start = np.maximum(group_start, end - n)
    return start, end, group_start


def _first_of_key(keys: pl.Series) -> np.ndarray:
    """True where a sorted key column starts a new key (compared in polars: no Python string objects)."""
    new = keys.ne_missing(keys.shift(1)).to_numpy().copy()
    new[:1] = True
    return new


def _gather_lists(source: pl.DataFrame, start: np.ndarray, end: np.ndarray, name: str) -> pl.Series:
    """List column: for each row r, the structs of source rows start[r]..end[r]-1 (in order).

    Built straight from offsets as an Arrow list array: no group-by, no join."""
    import pyarrow as pa

    lengths = end - start
    offsets = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_idx = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
    values = source[flat_idx].to_struct(name).to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), values))


@dataclass
class SamplePlan:
    """The samples without their history lists: one row per kept target (scalar columns plus its
    windows into the two sorted views of the table), so that the lists, which dominate memory at
    scale, can be built and written one block of targets at a time."""
    targets: pl.DataFrame  # output columns but the lists, then WINDOWS
    by_user: pl.DataFrame  # item_id, rating, timestamp, review|ref; sorted by user, time, item
    by_item: pl.DataFrame  # user_id, rating, timestamp, review|ref; sorted by item, time, user

    def samples(self, targets: pl.DataFrame | None = None) -> pl.DataFrame:
        """Complete samples of these target rows (a slice or a split of `self.targets`), in their order."""
        t = self.targets if targets is None else targets
        user_hist = _gather_lists(self.by_user, t["_us"].to_numpy(), t["_ue"].to_numpy(), "user_history")
        item_hist = _gather_lists(self.by_item, t["_is"].to_numpy(), t["_ie"].to_numpy(), "item_history")
        return t.drop(WINDOWS).with_columns(user_hist, item_hist)

    def blocks(self, targets: pl.DataFrame | None = None, block_rows: int | None = None) -> Iterator[pl.DataFrame]:
        """Complete samples of `targets`, `block_rows` at a time (an empty frame still gives one block)."""
        t = self.targets if targets is None else targets
        step = max(1, block_rows or BLOCK_ROWS)
        for first in range(0, max(len(t), 1), step):
            yield self.samples(t.slice(first, step))


def plan_samples(
    interactions: pl.DataFrame,
    history_user: int = 10,
    history_item: int = 10,
    min_history: int = 5,
    targets: pl.DataFrame | None = None,
    history_reviews: bool = True,
) -> tuple[SamplePlan, SampleStats]:
    """Windows, averages and drops of every target (see `build_samples`), lists not yet built."""
    text = ["review"] if history_reviews else ["ref"]
    df = normalise_interactions(interactions, with_review=history_reviews).with_row_index("_row")
    df_cols = [c for c in df.columns if c != "_row"]
    if not history_reviews:
        df = df.with_columns(pl.col("_row").alias("ref"))
    own = ["_row", "user_id", "item_id", "rating", "timestamp", *text]
    rows = len(df)

    def side(key: str, other: str, n: int, prefix: str) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
        """The table sorted by (key, time, other), and per table row (by _row): windows, average, count."""
        view = df.select(own).sort([key, "timestamp", other])
        start, end, group = _history_windows(_first_of_key(view[key]), view["timestamp"].to_numpy(), n)
        cum = np.zeros(rows + 1)
        np.cumsum(view["rating"].to_numpy(), out=cum[1:])
        count = end - group
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(count > 0, (cum[end] - cum[group]) / np.maximum(count, 1), np.nan)
        at = view["_row"].to_numpy()
        per_row = {}
        for name, values in ((f"{prefix}_avg", avg), (f"{prefix}_count", count),
                             (f"_{prefix[0]}s", start), (f"_{prefix[0]}e", end)):
            per_row[name] = np.empty_like(values)
            per_row[name][at] = values  # back to table order
        return view.select([other, "rating", "timestamp", *text]), per_row

    by_user, user_cols = side("user_id", "item_id", history_user, "user")
    by_item, item_cols = side("item_id", "user_id", history_item, "item")
    merged = df.select(df_cols).with_columns(
        *(pl.Series(k, v) for k, v in {**user_cols, **item_cols}.items()))
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

    extra = [c for c in df_cols if c not in INTERACTION_COLUMNS]
    kept = merged.select(["user_id", "item_id", "timestamp", "rating", "user_avg", "item_avg",
                          "user_count", "item_count", *extra, *WINDOWS])
    return SamplePlan(kept, by_user, by_item), stats


def build_samples(interactions: pl.DataFrame, *args: Any, block_rows: int | None = None,
                  **kwargs: Any) -> tuple[pl.DataFrame, SampleStats]:
    """Samples for every interaction (or for the (user_id, item_id) pairs in `targets`); the
    arguments are `plan_samples`' (history_user, history_item, min_history, targets, history_reviews).

    With history_reviews=False, history entries carry `ref` (the row of the interaction in
    the table passed in) instead of a copy of its review text: at scale the copies would
    dominate memory and disk (each review appears in up to 2N histories). `block_rows` only
    changes how many lists are built at a time, never the result."""
    plan, stats = plan_samples(interactions, *args, **kwargs)
    if block_rows is None:
        return plan.samples(), stats
    return pl.concat(list(plan.blocks(block_rows=block_rows)), how="vertical"), stats


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


def sample_as_of(interactions: pl.DataFrame, user_id: str, item_id: str, timestamp: int | None,
                 history_user: int, history_item: int) -> dict | None:
    """The sample of one (user, item) pair as of a moment: histories and averages from the
    interactions strictly earlier. Without a timestamp the moment is the user's latest rating of
    the item when there is one (so its rating is the truth and never part of the prompt), else
    just after the newest interaction in the data ("now", truth unknown). None when the user or
    the item has no earlier rating (the rule every sample follows)."""
    cols = ["user_id", "item_id", "rating", "timestamp", "review"]
    inter = interactions.select([c for c in cols if c in interactions.columns])
    own = inter.filter((pl.col("user_id") == user_id) | (pl.col("item_id") == item_id))  # all a sample reads
    rated = own.filter((pl.col("user_id") == user_id) & (pl.col("item_id") == item_id)).sort("timestamp")
    if timestamp is None:
        timestamp = int(rated["timestamp"][-1]) if len(rated) else int(inter["timestamp"].max()) + 1
    at = rated.filter(pl.col("timestamp") == timestamp)
    truth = float(at["rating"][-1]) if len(at) else None
    target = pl.DataFrame({"user_id": [user_id], "item_id": [item_id], "rating": [truth], "timestamp": [timestamp],
                           "review": [""]}, schema={**INTERACTION_COLUMNS})
    table = pl.concat([own.filter(pl.col("timestamp") < timestamp), target], how="diagonal_relaxed")
    samples, _ = build_samples(table, history_user, history_item, 0,
                               targets=target.select(["user_id", "item_id"]))
    if samples.is_empty():
        return None
    sample = samples.row(0, named=True)
    if sample["rating"] is not None and sample["rating"] != sample["rating"]:  # NaN: truth unknown
        sample["rating"] = None
    return sample
