"""Small files in the real formats of the public data sets, with invented content.

Every format carries the traps named in the README's data section: HTML in text, missing
review text, votes like "1,024", prices like "$9.99" or "None", null categories,
duplicate reviews and items, latin-1 titles, malformed lines, out-of-scale ratings.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

# Interactions that survive cleaning, by (user, item, rating, seconds); the same in every
# JSON format, so that the expected samples are the same:
#   A-P1 5 @1000, B-P1 3 @2000, A-P2 4 @3000, B-P2 2 @4000, C-P1 4 @5000, C-P3 5 @7000, C-P2 3 @8000
# With history 2 and min_history 1 only B-P2 and C-P2 have both a user and an item history.
CLEAN = [("A", "P1", 5, 1000), ("B", "P1", 3, 2000), ("A", "P2", 4, 3000), ("B", "P2", 2, 4000),
         ("C", "P1", 4, 5000), ("C", "P3", 5, 7000), ("C", "P2", 3, 8000)]
TEXT = {("A", "P1"): "Great<br />album &amp; more", ("B", "P1"): "ok", ("A", "P2"): "nice", ("B", "P2"): None,
        ("C", "P1"): "good", ("C", "P3"): "loved it", ("C", "P2"): "fine"}


def _lines(path: Path, records: list, bad: list[str] = (), gz: bool = False) -> Path:
    body = "".join(json.dumps(r) + "\n" for r in records) + "".join(b + "\n" for b in bad)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(body)
    else:
        path.write_text(body, encoding="utf-8")
    return path


def amazon2023(d: Path, gz: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    reviews = []
    for u, i, r, t in CLEAN:
        rec = {"rating": float(r), "title": "headline", "asin": i + "-v", "parent_asin": i, "user_id": u,
               "timestamp": t * 1000, "helpful_vote": 0, "verified_purchase": True, "images": []}
        if TEXT[(u, i)] is not None:
            rec["text"] = TEXT[(u, i)]
        reviews.append(rec)
    reviews.insert(5, {"rating": 1.0, "parent_asin": "P2", "user_id": "A", "timestamp": 6_000_000, "text": "again"})
    reviews.append({"rating": 7.0, "parent_asin": "P1", "user_id": "D", "timestamp": 9_000_000, "text": "x"})
    reviews.append({"rating": 4.0, "parent_asin": "P1", "timestamp": 9_500_000, "text": "no user"})
    ext = ".jsonl.gz" if gz else ".jsonl"
    _lines(d / f"Digital_Music{ext}", reviews, bad=['{"rating": 4.0, "user_id": "E", "parent_as'], gz=gz)
    meta = [
        {"parent_asin": "P1", "main_category": "Digital Music", "title": "Café Tacvba – Ré", "price": 9.99,
         "store": "Label One", "categories": ["Rock", "Latin"], "features": ["<b>Remastered</b>"],
         "description": ["A classic <i>album</i>."], "details": {}, "images": []},
        {"parent_asin": "P2", "main_category": "Digital Music", "title": "Quiet Hours", "price": "None",
         "store": None, "categories": [], "features": [], "description": [], "details": {}},
        {"parent_asin": "P1", "title": "duplicate meta line", "categories": []},
    ]
    _lines(d / f"meta_Digital_Music{ext}", meta, gz=gz)
    return d


def amazon2018(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    reviews = []
    for k, (u, i, r, t) in enumerate(CLEAN):
        rec = {"overall": float(r), "verified": True, "reviewTime": "01 1, 1970", "reviewerID": u, "asin": i,
               "unixReviewTime": t, "summary": "s", "style": {"Format:": " Audio CD"}}
        if TEXT[(u, i)] is not None:
            rec["reviewText"] = TEXT[(u, i)]
        if k == 0:
            rec["vote"] = "1,024"
        reviews.append(rec)
    reviews.append({"overall": "five", "reviewerID": "D", "asin": "P1", "unixReviewTime": 9000})
    with gzip.open(d / "Digital_Music_5.json.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in reviews))
    meta = [{"asin": "P1", "title": "Café Tacvba – Ré", "price": "$9.99", "brand": "Label One",
             "category": ["CDs & Vinyl", "Rock"], "feature": [], "description": ["<div>A classic</div>"]},
            {"asin": "P2", "title": "Quiet Hours", "price": "", "category": [], "main_cat": "Digital Music"},
            {"asin": "P2", "title": "duplicate asin"}]
    with gzip.open(d / "meta_Digital_Music.json.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in meta))
    return d


def yelp(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    reviews = []
    for k, (u, i, r, t) in enumerate(CLEAN):
        import datetime as dt
        date = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        reviews.append({"review_id": f"r{k}", "user_id": u, "business_id": i, "stars": r, "useful": 0, "funny": 0,
                        "cool": 0, "text": TEXT[(u, i)] or "", "date": date})
    reviews.append({"review_id": "bad", "user_id": "D", "business_id": "P1", "stars": 4, "date": "yesterday"})
    _lines(d / "yelp_academic_dataset_review.json", reviews)
    business = [{"business_id": "P1", "name": "Café Ré", "city": "Tucson", "state": "AZ", "stars": 4.0,
                 "review_count": 3, "is_open": 1, "attributes": {"WiFi": "u'free'", "RestaurantsPriceRange2": "2"},
                 "categories": "Mexican, Restaurants", "hours": None},
                {"business_id": "P2", "name": "Quiet Hours Bar", "city": "Reno", "state": "NV", "stars": 3.0,
                 "attributes": None, "categories": None}]
    _lines(d / "yelp_academic_dataset_business.json", business)
    return d


def movielens100k(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ids = {"P1": "1", "P2": "2", "P3": "3"}
    rows = [f"{u}\t{ids[i]}\t{r}\t{t}" for u, i, r, t in reversed(CLEAN)]  # unordered, as in the real file
    rows.append("A\t9\tfive\t100")
    (d / "u.data").write_text("\n".join(rows) + "\n")
    genres = ["0"] * 19
    g1, g2 = list(genres), list(genres)
    g1[8], g2[5] = "1", "1"  # Drama, Comedy
    items = [f"1|Misérables, Les (1995)|01-Jan-1995||http://x|{'|'.join(g1)}",
             f"2|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(g2)}",
             f"3|Heat (1995)|01-Jan-1995||http://x|{'|'.join(genres)}"]
    (d / "u.item").write_bytes(("\n".join(items) + "\n").encode("iso-8859-1"))
    return d


def movielens1m(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ids = {"P1": "1", "P2": "2", "P3": "3"}
    (d / "ratings.dat").write_text("\n".join(f"{u}::{ids[i]}::{r}::{t}" for u, i, r, t in CLEAN) + "\n")
    (d / "movies.dat").write_bytes("1::Misérables, Les (1995)::Drama\n2::Toy Story (1995)::Animation|Comedy\n"
                                   "3::Heat (1995)::Action|Crime\n".encode("iso-8859-1"))
    return d


def generic_csv(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = ["reviewer,product,stars,when,comment"] + [f"{u},{i},{r},{t},\"{TEXT[(u, i)] or ''}\"" for u, i, r, t in CLEAN]
    lines.append("Z,P1,,9000,missing stars")
    (d / "ratings.csv").write_text("\n".join(lines) + "\n")
    return d


# Goodreads (UCSD Book Graph): 32-hex user ids, numeric book ids as strings
GOODREADS_IDS = {"A": "8842281e1d1347389f2ab93d60773d4d", "B": "0a0b0c0d0e0f10111213141516171819",
                 "C": "ffeeddccbbaa99887766554433221100", "P1": "5", "P2": "17", "P3": "42"}


def _goodreads_date(seconds: int) -> str:
    import datetime as dt

    zone = dt.timezone(dt.timedelta(hours=-7))
    return dt.datetime.fromtimestamp(seconds, tz=zone).strftime("%a %b %d %H:%M:%S %z %Y")


def goodreads(d: Path) -> Path:
    """Traps: a rating of 0 (shelved, unrated), an empty and an unparseable date_added, spoiler
    markup in review text, numbers and shelf counts as strings (some empty), a book missing."""
    d.mkdir(parents=True, exist_ok=True)
    ids = GOODREADS_IDS
    spoiler = {("A", "P1"): "Loved it (view spoiler)[the butler did it (hide spoiler)] a lot",
               ("C", "P3"): "<b>Gripping</b> &amp; long"}
    reviews = []
    for k, (u, i, r, t) in enumerate(CLEAN):
        reviews.append({"user_id": ids[u], "book_id": ids[i], "review_id": f"rv{k}", "rating": r,
                        "review_text": spoiler.get((u, i), TEXT[(u, i)] or ""), "date_added": _goodreads_date(t),
                        "date_updated": _goodreads_date(t + 5), "read_at": "", "started_at": "", "n_votes": k,
                        "n_comments": 0})
    reviews.insert(2, {"user_id": ids["A"], "book_id": ids["P3"], "review_id": "rv-shelved", "rating": 0,
                       "review_text": "", "date_added": _goodreads_date(500), "n_votes": 0})
    reviews.append({"user_id": ids["B"], "book_id": ids["P3"], "review_id": "rv-nodate", "rating": 4,
                    "review_text": "no date", "date_added": "", "n_votes": 0})
    reviews.append({"user_id": ids["C"], "book_id": ids["P1"], "review_id": "rv-baddate", "rating": 2,
                    "review_text": "odd date", "date_added": "25/08/2017", "n_votes": 0})
    _lines(d / "goodreads_reviews_fantasy_paranormal.json.gz", reviews, gz=True)
    books = [
        {"book_id": ids["P1"], "title": "The Night Orchard (Orchard, #1)", "title_without_series": "The Night Orchard",
         "description": "A <i>slow</i> burn.<br />Then fire.", "average_rating": "4.12", "num_pages": "",
         "publication_year": "2005", "ratings_count": "",
         "popular_shelves": [{"count": "3", "name": "to-read"}, {"count": "12", "name": "fantasy"},
                             {"count": "", "name": "owned"}],
         "authors": [{"author_id": "77", "role": ""}]},
        {"book_id": ids["P2"], "title": "", "title_without_series": "Salt Roads", "description": "",
         "average_rating": "", "num_pages": "210", "publication_year": "", "popular_shelves": [], "authors": []},
    ]
    _lines(d / "goodreads_books_fantasy_paranormal.json.gz", books, gz=True)
    return d
