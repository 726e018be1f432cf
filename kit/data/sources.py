"""Readers for public rating data sets -> one interactions table + one items table.

Each reader streams its files line by line (gzip or not), decodes JSON with msgspec, and
yields canonical rows; bad lines are skipped and counted by reason, or raise at the first
one with file, line and field when strict. Formats and traps: see the README's data section.

Canonical interaction: user_id, item_id (str), rating (float), timestamp (int seconds),
review (str, HTML stripped). Canonical item: item_id, title, categories (list[str]),
brand, price (float | None), features (list[str]), description.
"""
from __future__ import annotations

import gzip
import html
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec

from kit.text import cut_words

_BLOCK_TAGS = re.compile(r"<\s*(?:br|/?p|/?div|/?li|/?ul|/?ol|/?tr|/?td|/?h\d)\b[^>]{0,200}>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")
_PRICE = re.compile(r"[-+]?\d[\d,]*\.?\d*")


class DataError(ValueError):
    """Bad input in strict mode: names the file, the line and the field."""


@dataclass
class ReadStats:
    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first "file:line"

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, where)

    def reject(self, bad: "BadRow", where: str, strict: bool) -> None:
        """A bad line: stop with file, line and field when strict, else count it by reason."""
        if strict:
            raise DataError(f"{where}: field '{bad.field_name}': {bad.detail} "
                            "(drop --strict to skip and count such lines)") from None
        self.drop(bad.reason, where)


class BadRow(Exception):
    def __init__(self, reason: str, field_name: str, detail: str):
        super().__init__(detail)
        self.reason, self.field_name, self.detail = reason, field_name, detail


def clean_text(value: Any, limit: int = 1000) -> str:
    """Strip HTML tags and entities, collapse whitespace, cut at a word boundary."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v)
    text = str(value)
    if "<" in text:
        text = _TAGS.sub("", _BLOCK_TAGS.sub(" ", text))  # block tags separate words, inline tags do not
    if "&" in text:
        text = html.unescape(text)
    return cut_words(_SPACE.sub(" ", text).strip(), limit)


def open_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of a text file, gzipped or not."""
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    with io.BufferedReader(stream, buffer_size=1 << 20) if stream is not raw else raw as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line


def _number(value: Any, name: str) -> float:
    try:
        if isinstance(value, str):
            value = value.replace(",", "").strip()
        out = float(value)
    except (TypeError, ValueError):
        raise BadRow(f"bad_{name}", name, f"{value!r} is not a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise BadRow(f"bad_{name}", name, f"{value!r} is not a finite number")
    return out


def _required(rec: dict, name: str) -> Any:
    value = rec.get(name)
    if value is None or value == "":
        raise BadRow(f"missing_{name}", name, "missing")
    return value


def parse_price(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _PRICE.search(str(value))
    if not match:
        return None  # "None", "", "Click for price"
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, list):  # Amazon 2014-style nested category paths
                out += [str(x) for x in v if x]
            elif v:
                out.append(str(v))
        return out
    return [str(value)]


# --------------------------------------------------------------------------- generic line reader

_decoder = msgspec.json.Decoder()


def read_json_lines(path: Path, to_row: Callable[[dict], dict], stats: ReadStats, strict: bool,
                    progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Decode each line, map it to a canonical row; count (or raise on) what is wrong."""
    for n, line in open_lines(path):
        stats.rows_read += 1
        if progress and stats.rows_read % 100_000 == 0:
            progress(100_000)
        where = f"{path}:{n}"
        try:
            try:
                rec = _decoder.decode(line)
            except msgspec.DecodeError as exc:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRow("bad_encoding", "(line)", "not valid UTF-8") from None
                raise BadRow("malformed_json", "(line)", str(exc)) from None
            if not isinstance(rec, dict):
                raise BadRow("malformed_json", "(line)", "not a JSON object")
            row = to_row(rec)
        except BadRow as bad:
            stats.reject(bad, where, strict)
            continue
        stats.rows_kept += 1
        yield row


def check_scale(rating: float, scale: tuple[float, float]) -> float:
    if not scale[0] <= rating <= scale[1]:
        raise BadRow("rating_out_of_scale", "rating", f"{rating:g} is outside the scale {scale[0]:g}-{scale[1]:g}")
    return rating


# --------------------------------------------------------------------------- Amazon 2023

def amazon2023_review(scale, review_chars):
    def to_row(review: dict) -> dict:
        ts = _number(_required(review, "timestamp"), "timestamp")
        text = clean_text(review.get("text"), review_chars)
        return {"user_id": str(_required(review, "user_id")), "item_id": str(_required(review, "parent_asin")),
                "rating": check_scale(_number(_required(review, "rating"), "rating"), scale),
                "timestamp": int(ts // 1000), "review": text}  # 2023 timestamps are milliseconds
    return to_row


def amazon2023_item(desc_chars):
    def to_row(meta: dict) -> dict:
        cats = _str_list(meta.get("categories")) or _str_list(meta.get("main_category"))
        return {"item_id": str(_required(meta, "parent_asin")), "title": clean_text(meta.get("title"), 300),
                "categories": cats, "brand": clean_text(meta.get("store") or meta.get("author") or "", 120) or None,
                "price": parse_price(meta.get("price")), "features": [clean_text(f, 200) for f in _str_list(meta.get("features"))],
                "description": clean_text(meta.get("description"), desc_chars)}
    return to_row


# --------------------------------------------------------------------------- Amazon 2018

def amazon2018_review(scale, review_chars):
    def to_row(review: dict) -> dict:
        text = clean_text(review.get("reviewText"), review_chars)
        return {"user_id": str(_required(review, "reviewerID")), "item_id": str(_required(review, "asin")),
                "rating": check_scale(_number(_required(review, "overall"), "overall"), scale),
                "timestamp": int(_number(_required(review, "unixReviewTime"), "unixReviewTime")), "review": text}
    return to_row


def amazon2018_item(desc_chars):
    def to_row(meta: dict) -> dict:
        return {"item_id": str(_required(meta, "asin")), "title": clean_text(meta.get("title"), 300),
                "categories": _str_list(meta.get("category")) or _str_list(meta.get("main_cat")),
                "brand": clean_text(meta.get("brand") or "", 120) or None, "price": parse_price(meta.get("price")),
                "features": [clean_text(f, 200) for f in _str_list(meta.get("feature"))],
                "description": clean_text(meta.get("description"), desc_chars)}
    return to_row


# --------------------------------------------------------------------------- Yelp

def _yelp_time(value: Any) -> int:
    try:
        return int(datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        raise BadRow("bad_date", "date", f"{value!r} is not 'YYYY-MM-DD HH:MM:SS'") from None


def yelp_review(scale, review_chars):
    def to_row(review: dict) -> dict:
        return {"user_id": str(_required(review, "user_id")), "item_id": str(_required(review, "business_id")),
                "rating": check_scale(_number(_required(review, "stars"), "stars"), scale),
                "timestamp": _yelp_time(_required(review, "date")), "review": clean_text(review.get("text"), review_chars)}
    return to_row


def yelp_item(desc_chars):
    def to_row(business: dict) -> dict:
        cats = [c.strip() for c in str(business.get("categories") or "").split(",") if c.strip()]
        where = ", ".join(x for x in (business.get("city"), business.get("state")) if x)
        attrs = business.get("attributes") or {}
        feats = [f"{k}: {v}" for k, v in list(attrs.items())[:8]] if isinstance(attrs, dict) else []
        return {"item_id": str(_required(business, "business_id")), "title": clean_text(business.get("name"), 300),
                "categories": cats, "brand": where or None, "price": None, "features": feats,
                "description": clean_text(f"Located in {where}." if where else "", desc_chars)}
    return to_row


# --------------------------------------------------------------------------- Goodreads (UCSD Book Graph)

_SPOILER_MARKS = re.compile(r"\(view spoiler\)\[|\(hide spoiler\)\]")


def _goodreads_time(value: Any) -> int:
    try:
        return int(datetime.strptime(str(value), "%a %b %d %H:%M:%S %z %Y").timestamp())
    except ValueError:
        raise BadRow("bad_date_added", "date_added",
                     f"{value!r} is not like 'Fri Aug 25 13:55:02 -0700 2017'") from None


def goodreads_review(scale, review_chars):
    """A rating of 0 means "shelved without a rating": such rows are dropped as `unrated`."""
    def to_row(review: dict) -> dict:
        rating = _number(_required(review, "rating"), "rating")
        if rating == 0:
            raise BadRow("unrated", "rating", "0 = shelved without a rating")
        text = _SPOILER_MARKS.sub(" ", str(review.get("review_text") or ""))
        return {"user_id": str(_required(review, "user_id")), "item_id": str(_required(review, "book_id")),
                "rating": check_scale(rating, scale), "timestamp": _goodreads_time(_required(review, "date_added")),
                "review": clean_text(text, review_chars)}
    return to_row


def _count(value: Any) -> int:
    """Goodreads numbers are strings that may be empty."""
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def goodreads_book(desc_chars, shelves: int = 5):
    """Categories: the book's most used shelves (their counts are strings)."""
    def to_row(book: dict) -> dict:
        shelf_list = [s for s in book.get("popular_shelves") or [] if isinstance(s, dict) and s.get("name")]
        top = sorted(shelf_list, key=lambda s: -_count(s.get("count")))[:shelves]
        facts = [f"{label} {str(book.get(key)).strip()}" for key, label in
                 (("publication_year", "published"), ("num_pages", "pages"), ("average_rating", "average rating"))
                 if str(book.get(key) or "").strip()]
        authors = [str(a.get("author_id")) for a in book.get("authors") or [] if isinstance(a, dict) and a.get("author_id")]
        return {"item_id": str(_required(book, "book_id")),
                "title": clean_text(book.get("title") or book.get("title_without_series"), 300),
                "categories": [str(s["name"]) for s in top], "brand": ("author " + ", ".join(authors)) if authors else None,
                "price": None, "features": facts, "description": clean_text(book.get("description"), desc_chars)}
    return to_row


# --------------------------------------------------------------------------- MovieLens

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]


def read_delimited(path: Path, sep: str, to_row: Callable[[list[str]], dict], stats: ReadStats, strict: bool,
                   encoding: str = "iso-8859-1") -> Iterator[dict]:
    for n, line in open_lines(path):
        stats.rows_read += 1
        try:
            row = to_row(line.decode(encoding).rstrip("\r\n").split(sep))
        except (BadRow, IndexError) as bad:
            b = bad if isinstance(bad, BadRow) else BadRow("missing_field", "(columns)", "too few columns")
            stats.reject(b, f"{path}:{n}", strict)
            continue
        stats.rows_kept += 1
        yield row


def movielens_rating(scale):
    def to_row(cols: list[str]) -> dict:
        return {"user_id": cols[0].strip(), "item_id": cols[1].strip(),
                "rating": check_scale(_number(cols[2], "rating"), scale),
                "timestamp": int(_number(cols[3], "timestamp")), "review": ""}
    return to_row


def ml100k_item(cols: list[str]) -> dict:
    flags = cols[5:5 + len(ML100K_GENRES)]
    genres = [genre for genre, flag in zip(ML100K_GENRES, flags) if flag.strip() == "1"]
    return {"item_id": cols[0].strip(), "title": cols[1].strip(), "categories": genres, "brand": None,
            "price": None, "features": [f"released {cols[2].strip()}"] if cols[2].strip() else [], "description": ""}


def ml1m_item(cols: list[str]) -> dict:
    return {"item_id": cols[0].strip(), "title": cols[1].strip(), "categories": [g for g in cols[2].split("|") if g],
            "brand": None, "price": None, "features": [], "description": ""}


# --------------------------------------------------------------------------- generic CSV / JSONL

CANONICAL = ("user_id", "item_id", "rating", "timestamp", "review")


def convert_time(value: Any, unit: str) -> int:
    if unit == "iso":
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise BadRow("bad_timestamp", "timestamp", f"{value!r} is not an ISO date") from None
        return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp())
    t = _number(value, "timestamp")
    return int(t // 1000) if unit == "ms" else int(t)


def generic_review(mapping: dict[str, str], scale, review_chars, time_unit):
    def to_row(r: dict) -> dict:
        get = lambda k: r.get(mapping.get(k, k))  # noqa: E731
        for k in ("user_id", "item_id", "rating", "timestamp"):
            if get(k) in (None, ""):
                raise BadRow(f"missing_{k}", mapping.get(k, k), "missing")
        return {"user_id": str(get("user_id")), "item_id": str(get("item_id")),
                "rating": check_scale(_number(get("rating"), "rating"), scale),
                "timestamp": convert_time(get("timestamp"), time_unit), "review": clean_text(get("review"), review_chars)}
    to_row.required = {k: mapping.get(k, k) for k in ("user_id", "item_id", "rating", "timestamp")}
    return to_row


def generic_item(mapping: dict[str, str], desc_chars):
    def to_row(r: dict) -> dict:
        get = lambda k: r.get(mapping.get(k, k))  # noqa: E731
        if get("item_id") in (None, ""):
            raise BadRow("missing_item_id", mapping.get("item_id", "item_id"), "missing")
        cats = get("categories")
        return {"item_id": str(get("item_id")), "title": clean_text(get("title"), 300),
                "categories": [c.strip() for c in cats.split("|")] if isinstance(cats, str) else _str_list(cats),
                "brand": clean_text(get("brand") or "", 120) or None, "price": parse_price(get("price")),
                "features": _str_list(get("features")), "description": clean_text(get("description"), desc_chars)}
    to_row.required = {"item_id": mapping.get("item_id", "item_id")}
    return to_row


def check_header(path: Path, header: list[str], required: dict[str, str]) -> None:
    """Stop before reading any row when a needed column is absent, naming the `--map` to use."""
    missing = {k: col for k, col in required.items() if col not in header}
    if not missing:
        return
    import difflib

    guess = {k: (difflib.get_close_matches(k, header, n=1, cutoff=0.6) or ["COLUMN"])[0] for k in missing}
    raise DataError(f"{path}: no column {', '.join(repr(c) for c in missing.values())} (header: {', '.join(header)}); "
                    f"name the columns with --map {','.join(f'{k}={v}' for k, v in guess.items())}")


def read_csv_rows(path: Path, to_row, stats: ReadStats, strict: bool) -> Iterator[dict]:
    import csv

    with path.open(newline="", encoding="utf-8", errors="strict") as f:
        reader = csv.DictReader(f)
        try:
            check_header(path, reader.fieldnames or [], getattr(to_row, "required", {}))
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8)") from None
        n = 1
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise DataError(f"{path}: not UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8)") from None
            n = reader.line_num
            stats.rows_read += 1
            try:
                row = to_row(rec)
            except BadRow as bad:
                stats.reject(bad, f"{path}:{n}", strict)
                continue
            stats.rows_kept += 1
            yield row
