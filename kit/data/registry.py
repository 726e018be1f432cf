"""The data sources `kit.data prepare` knows: one entry each.

An entry says where the files are (glob patterns), how a reviews file and an items file
become canonical rows, the columnar fast path if the format has one, the source's native
rating scale and how to download it, if the kit can. Adding a source is one entry here
(plus its readers in `sources.py` and a fixture test); nothing else names sources.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from kit.config import PrepareOptions
from kit.data import sources
from kit.data.columnar import ColumnarSpec

# (file, options, scale, stats, progress) -> canonical interaction rows
ReviewReader = Callable[[Path, PrepareOptions, tuple[float, float], sources.ReadStats, Optional[Callable]],
                        Iterator[dict]]
# (file, options, stats) -> canonical item rows
ItemReader = Callable[[Path, PrepareOptions, sources.ReadStats], Iterator[dict]]


@dataclass(frozen=True)
class Source:
    name: str
    reviews: tuple[str, ...]            # glob patterns of the reviews file in a folder, first hit wins
    read_reviews: ReviewReader
    items: tuple[str, ...] = ()         # glob patterns of the items file in a folder
    read_items: Optional[ItemReader] = None
    items_required: bool = True         # a folder without an items file is an error (else: no metadata)
    what: tuple[str, str] = ("review", "meta")  # the files' names in error messages
    columnar: Optional[ColumnarSpec] = None
    scale: tuple[float, float] = (1.0, 5.0)
    download: Optional[Callable[..., list[Path]]] = None  # (category, dest) -> files
    mapped: bool = False                # columns named by --map / --item-map (generic formats)


def json_reviews(make_row) -> ReviewReader:
    """A JSON Lines reviews reader from a row maker `make_row(scale, review_chars)`."""
    def read(path, opts, scale, stats, progress=None):
        return sources.read_json_lines(path, make_row(scale, opts.review_chars), stats, opts.strict, progress)
    return read


def json_items(make_row) -> ItemReader:
    """A JSON Lines items reader from a row maker `make_row(description_chars)`."""
    def read(path, opts, stats):
        return sources.read_json_lines(path, make_row(opts.description_chars), stats, opts.strict)
    return read


def _movielens_ratings(path, opts, scale, stats, progress=None):
    sep = "\t" if path.name == "u.data" else "::"
    return sources.read_delimited(path, sep, sources.movielens_rating(scale), stats, opts.strict)


def _movielens_items(path, opts, stats):
    sep, to_row = ("|", sources.ml100k_item) if path.name == "u.item" else ("::", sources.ml1m_item)
    return sources.read_delimited(path, sep, to_row, stats, opts.strict)


def _mapped_reviews(path, opts, scale, stats, progress=None):
    to_row = sources.generic_review(opts.mapping, scale, opts.review_chars, opts.time_unit)
    if path.suffix == ".csv":
        return sources.read_csv_rows(path, to_row, stats, opts.strict)
    return sources.read_json_lines(path, to_row, stats, opts.strict, progress)


def _mapped_items(path, opts, stats):
    to_row = sources.generic_item(opts.item_mapping, opts.description_chars)
    if path.suffix == ".csv":
        return sources.read_csv_rows(path, to_row, stats, opts.strict)
    return sources.read_json_lines(path, to_row, stats, opts.strict)


def _download_amazon2023(category: str, dest) -> list[Path]:
    from kit.data.prepare import download_amazon2023

    return download_amazon2023(category, dest)


_MAPPED = dict(reviews=("*.csv", "*.jsonl", "*.jsonl.gz"), read_reviews=_mapped_reviews, read_items=_mapped_items,
               what=("interactions", "items"), mapped=True)

REGISTRY: dict[str, Source] = {s.name: s for s in [
    Source("amazon2023", ("[!m]*.jsonl.gz", "[!m]*.jsonl", "[!m]*.json.gz"),
           json_reviews(sources.amazon2023_review), ("meta_*.jsonl.gz", "meta_*.jsonl"),
           json_items(sources.amazon2023_item),
           columnar=ColumnarSpec({"user_id": "user_id", "parent_asin": "item_id", "rating": "rating",
                                  "timestamp": "timestamp", "text": "review"}, "ms"),
           download=_download_amazon2023),
    Source("amazon2018", ("*_5.json.gz", "*_5.json", "[!m]*.json.gz", "[!m]*.json"),
           json_reviews(sources.amazon2018_review), ("meta_*.json.gz", "meta_*.json"),
           json_items(sources.amazon2018_item),
           columnar=ColumnarSpec({"reviewerID": "user_id", "asin": "item_id", "overall": "rating",
                                  "unixReviewTime": "timestamp", "reviewText": "review"}, "s")),
    Source("yelp", ("*review*.json", "*review*.json.gz"), json_reviews(sources.yelp_review),
           ("*business*.json", "*business*.json.gz"), json_items(sources.yelp_item), what=("review", "business"),
           columnar=ColumnarSpec({"user_id": "user_id", "business_id": "item_id", "stars": "rating",
                                  "date": "timestamp", "text": "review"}, "date")),
    Source("goodreads", ("goodreads_reviews_*.json.gz", "goodreads_reviews_*.json"),
           json_reviews(sources.goodreads_review), ("goodreads_books*.json.gz", "goodreads_books*.json"),
           json_items(sources.goodreads_book), what=("review", "books")),
    Source("movielens", ("u.data", "ratings.dat"), _movielens_ratings, ("u.item", "movies.dat"), _movielens_items,
           items_required=False, what=("ratings (u.data or ratings.dat)", "movies")),
    Source("csv", **_MAPPED),
    Source("jsonl", **_MAPPED),
]}


def get_source(name: str) -> Source:
    if name not in REGISTRY:
        raise sources.DataError(f"--source {name}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
