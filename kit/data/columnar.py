"""Fast path for the big review files: polars' native JSON Lines reader + columnar checks.

Used when not --strict. Any file that polars cannot read as typed (a malformed line, a
rating stored as text, ...) falls back to the line-by-line reader, which counts each bad
line by reason. Same canonical output and the same drop reasons as the slow path.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import polars as pl

from kit.data.sources import ReadStats, clean_text

# source -> (column -> canonical name, dtype), and how its timestamp becomes seconds
SPECS = {
    "amazon2023": ({"user_id": ("user_id", pl.Utf8), "parent_asin": ("item_id", pl.Utf8),
                    "rating": ("rating", pl.Float64), "timestamp": ("timestamp", pl.Int64),
                    "text": ("review", pl.Utf8)}, "ms"),
    "amazon2018": ({"reviewerID": ("user_id", pl.Utf8), "asin": ("item_id", pl.Utf8),
                    "overall": ("rating", pl.Float64), "unixReviewTime": ("timestamp", pl.Int64),
                    "reviewText": ("review", pl.Utf8)}, "s"),
    "yelp": ({"user_id": ("user_id", pl.Utf8), "business_id": ("item_id", pl.Utf8),
              "stars": ("rating", pl.Float64), "date": ("timestamp", pl.Utf8), "text": ("review", pl.Utf8)}, "date"),
}
def fields_text(fields: dict) -> str:
    return next(k for k, (v, _) in fields.items() if v == "review")


_BLOCK = r"(?i)<\s*(?:br|/?p|/?div|/?li|/?ul|/?ol|/?tr|/?td|/?h\d)\b[^>]{0,200}>"


def read_reviews_columnar(path: Path, source: str, scale: tuple[float, float], review_chars: int,
                          stats: ReadStats) -> pl.DataFrame | None:
    """Canonical interactions, or None when the file needs the line-by-line reader."""
    fields, unit = SPECS[source]
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    schema = {k: t for k, (_, t) in fields.items()}
    # review text is only kept up to review_chars: cut it while reading so memory stays bounded
    # (a generous margin leaves room for HTML that the cleaning below removes)
    keep_chars = 4 * review_chars + 1000
    try:
        if gz:  # inflated in memory first
            lazy = pl.read_ndjson(io.BytesIO(gzip.decompress(path.read_bytes())), schema=schema).lazy()
        else:
            lazy = pl.scan_ndjson(path, schema=schema)
        df = lazy.with_columns(pl.col(fields_text(fields)).str.slice(0, keep_chars)).collect(engine="streaming")
    except Exception:
        return None
    df = df.rename({k: v for k, (v, _) in fields.items()})
    if unit == "ms":
        ts = pl.col("timestamp") // 1000
    elif unit == "date":
        ts = pl.col("timestamp").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%d %H:%M:%S", strict=False).dt.epoch("s")
    else:
        ts = pl.col("timestamp")
    df = df.with_columns(ts.alias("timestamp"))
    stats.rows_read += len(df)
    names = {v: k for k, (v, _) in fields.items()}
    checks = [(f"missing_{names['user_id']}", pl.col("user_id").is_null() | (pl.col("user_id") == "")),
              (f"missing_{names['item_id']}", pl.col("item_id").is_null() | (pl.col("item_id") == "")),
              (f"missing_{names['rating']}", pl.col("rating").is_null()),
              ("bad_date" if unit == "date" else f"missing_{names['timestamp']}", pl.col("timestamp").is_null()),
              ("rating_out_of_scale", (pl.col("rating") < scale[0]) | (pl.col("rating") > scale[1])
               | pl.col("rating").is_nan())]
    keep = pl.lit(True)
    df = df.with_row_index("_line", offset=1)
    for reason, bad in checks:
        hit = df.filter(keep & bad)
        if len(hit):
            stats.dropped[reason] += len(hit)
            stats.examples.setdefault(reason, f"{path}:{hit['_line'][0]}")
        keep = keep & ~bad.fill_null(False)
    df = df.filter(keep).drop("_line")
    stats.rows_kept += len(df)
    text = (pl.col("review").fill_null("").str.replace_all(_BLOCK, " ").str.replace_all(r"<[^>]{0,200}>", "")
            .str.replace_all(r"\s+", " ").str.strip_chars())
    df = df.with_columns(text.alias("review"))
    # entities and over-long texts are rare: the exact Python cleaner handles just those rows
    fix = pl.col("review").str.contains("&", literal=True) | (pl.col("review").str.len_chars() > review_chars)
    df = df.with_columns(pl.when(fix).then(pl.col("review").map_elements(
        lambda s: clean_text(s, review_chars), return_dtype=pl.Utf8)).otherwise(pl.col("review")).alias("review"))
    return df.select(["user_id", "item_id", "rating", "timestamp", "review"]).with_columns(
        pl.col("timestamp").cast(pl.Int64))
