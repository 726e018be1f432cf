"""kit.data prepare: every source from its fixture, exact samples, no leakage, counted drops."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.data.prepare import PrepareOptions, load_prepared, prepare, read_prepared
from kit.data.sources import DataError, clean_text, parse_price
from tests import data_fixtures as F
from tests.conftest import REPO


def run(source, path, out, **kw):
    opts = PrepareOptions(source=source, path=str(path), out=str(out), **{"history": 2, "min_history": 1, **kw})
    return prepare(opts, log=lambda *_: None)


def samples_of(out):
    splits, items, inter, meta = read_prepared(out)
    return {(r["user_id"], r["item_id"]): r for s in splits.values() for r in s.iter_rows(named=True)}, items, inter, meta


def expected_ok(got, ids=lambda x: x):
    """The two samples that the shared fixture must give, whatever the format."""
    assert set(got) == {(ids("B"), ids("P2")), (ids("C"), ids("P2"))}
    b = got[(ids("B"), ids("P2"))]
    assert [h["item_id"] for h in b["user_history"]] == [ids("P1")] and b["user_avg"] == 3.0
    assert [(h["user_id"], h["rating"]) for h in b["item_history"]] == [(ids("A"), 4.0)] and b["item_avg"] == 4.0
    c = got[(ids("C"), ids("P2"))]
    assert [h["item_id"] for h in c["user_history"]] == [ids("P1"), ids("P3")] and c["user_avg"] == 4.5
    assert [h["user_id"] for h in c["item_history"]] == [ids("A"), ids("B")] and c["item_avg"] == 3.0
    for s in got.values():
        for h in s["user_history"] + s["item_history"]:
            assert h["timestamp"] < s["timestamp"]


def test_amazon2023(tmp_path):
    stats = run("amazon2023", F.amazon2023(tmp_path / "raw"), tmp_path / "out")
    got, items, inter, meta = samples_of(tmp_path / "out")
    expected_ok(got)
    assert stats["rows_read"] == 11 and stats["rows_kept"] == 7
    assert stats["rows_dropped"] == {"duplicate_user_item": 1, "malformed_json": 1, "missing_user_id": 1,
                                     "rating_out_of_scale": 1}
    assert stats["items_without_metadata"] == 1 and stats["users"] == 3 and stats["items"] == 3
    assert stats["rating_histogram"] == {"2": 1, "3": 2, "4": 2, "5": 2}
    assert stats["samples"] == {"train": 0, "valid": 0, "test": 2}
    # the earliest of the duplicate (A, P2) reviews is kept; timestamps are seconds
    a_p2 = inter.filter((pl.col("user_id") == "A") & (pl.col("item_id") == "P2")).row(0, named=True)
    assert a_p2["rating"] == 4.0 and a_p2["timestamp"] == 3000
    assert inter.filter(pl.col("user_id") == "A")["review"].to_list()[0] == "Great album & more"  # HTML stripped
    assert inter.filter((pl.col("user_id") == "B") & (pl.col("item_id") == "P2"))["review"][0] == ""
    p1 = items.filter(pl.col("item_id") == "P1").row(0, named=True)
    assert p1["title"] == "Café Tacvba – Ré" and p1["categories"] == ["Rock", "Latin"] and p1["price"] == 9.99
    assert p1["features"] == ["Remastered"] and p1["description"] == "A classic album."
    assert items.filter(pl.col("item_id") == "P2")["price"][0] is None  # "None" price
    assert items.filter(pl.col("item_id") == "P3")["title"][0] == "item P3"
    assert meta["scale"] == [1.0, 5.0]


def test_amazon2023_strict_names_file_line_and_field(tmp_path):
    with pytest.raises(DataError, match=r"Digital_Music.jsonl:9: field 'rating': 7 is outside the scale 1-5"):
        run("amazon2023", F.amazon2023(tmp_path / "raw", gz=False), tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_amazon2018_votes_prices_and_duplicates(tmp_path):
    stats = run("amazon2018", F.amazon2018(tmp_path / "raw"), tmp_path / "out")
    got, items, _, _ = samples_of(tmp_path / "out")
    expected_ok(got)
    assert stats["rows_dropped"] == {"bad_overall": 1}
    p1 = items.filter(pl.col("item_id") == "P1").row(0, named=True)
    assert p1["price"] == 9.99 and p1["brand"] == "Label One" and p1["description"] == "A classic"
    assert items.filter(pl.col("item_id") == "P2")["title"].to_list() == ["Quiet Hours"]  # duplicate asin dropped


def test_yelp_dates_and_null_categories(tmp_path):
    stats = run("yelp", F.yelp(tmp_path / "raw"), tmp_path / "out")
    got, items, inter, _ = samples_of(tmp_path / "out")
    expected_ok(got)
    assert stats["rows_dropped"] == {"bad_date": 1}
    assert inter["timestamp"].sort().to_list() == [t for *_, t in F.CLEAN]
    p1 = items.filter(pl.col("item_id") == "P1").row(0, named=True)
    assert p1["categories"] == ["Mexican", "Restaurants"] and "WiFi: u'free'" in p1["features"]
    assert items.filter(pl.col("item_id") == "P2")["categories"][0].to_list() == []


@pytest.mark.parametrize("maker", [F.movielens100k, F.movielens1m])
def test_movielens_latin1_titles(tmp_path, maker):
    stats = run("movielens", maker(tmp_path / "raw"), tmp_path / "out")
    ids = {"A": "A", "B": "B", "C": "C", "P1": "1", "P2": "2", "P3": "3"}
    got, items, _, _ = samples_of(tmp_path / "out")
    expected_ok(got, ids.get)
    assert items.filter(pl.col("item_id") == "1")["title"][0] == "Misérables, Les (1995)"
    assert items.filter(pl.col("item_id") == "2")["categories"][0].to_list()[-1] == "Comedy"
    if maker is F.movielens100k:
        assert stats["rows_dropped"] == {"bad_rating": 1}


def test_generic_csv_with_mapping(tmp_path):
    stats = run("csv", F.generic_csv(tmp_path / "raw"), tmp_path / "out",
                mapping={"user_id": "reviewer", "item_id": "product", "rating": "stars", "timestamp": "when",
                         "review": "comment"})
    got, *_ = samples_of(tmp_path / "out")
    expected_ok(got)
    assert stats["rows_dropped"] == {"missing_rating": 1}


def test_options_kcore_time_split_and_caps(tmp_path):
    raw = F.amazon2023(tmp_path / "raw")
    stats = run("amazon2023", raw, tmp_path / "k", kcore=2)
    assert stats["rows_dropped"]["kcore"] > 0
    with pytest.raises(DataError, match=r"kept 0 of 11 rows \(.*kcore 7\); nothing written"):
        run("amazon2023", raw, tmp_path / "k3", kcore=3)
    assert not (tmp_path / "k3").exists()
    stats = run("amazon2023", raw, tmp_path / "t", split="time", time_cut=(0.5, 0.9), max_test=1, seed=1)
    assert sum(stats["samples"].values()) <= 2 and stats["samples"]["test"] <= 1
    with pytest.raises(DataError, match=r"0 samples kept from 11 rows \(dropped: .*not_in_categories [1-9].*"
                                        r"no_user_history 3\)"):  # only P1 is 'latin': no user has a history
        run("amazon2023", raw, tmp_path / "c", categories=["latin"])


def test_load_prepared_dataset_with_lazy_prompts(tmp_path):
    run("amazon2023", F.amazon2023(tmp_path / "raw"), tmp_path / "out")
    ds = load_prepared(tmp_path / "out", "test", prompt_style="reczero")
    for col in ("user_id", "item_id", "timestamp", "rating", "user_history", "item_history", "user_avg", "item_avg",
                "item_title", "rating_min", "rating_max"):
        assert col in ds.column_names
    row = ds[0]
    assert row["prompt"][0]["role"] == "system" and "Quiet Hours" in row["prompt"][1]["content"]
    with pytest.raises(DataError, match="not a prepared data folder"):
        load_prepared(tmp_path / "nope")


def test_cli_prepare_and_train_config_reads_it(tmp_path):
    raw = F.amazon2023(tmp_path / "raw")
    proc = subprocess.run([sys.executable, "-m", "kit.data", "prepare", "--source", "amazon2023", "--path", str(raw),
                           "--out", str(tmp_path / "out"), "--history", "2", "--min-history", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "read 11 rows, kept 7" in proc.stdout and "malformed_json 1" in proc.stdout
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["samples"]["test"] == 2
    bad = subprocess.run([sys.executable, "-m", "kit.data", "prepare", "--source", "yelp", "--path",
                          str(tmp_path / "missing"), "--out", str(tmp_path / "x")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [x for x in bad.stderr.splitlines() if x.startswith("kit: error:")]
    assert bad.returncode == 2 and len(errors) == 1 and "does not exist" in errors[0]
    from kit.config import load_config
    from kit.data import load_task_data

    cfg = load_config("smoke", ["data.source=prepared", f"data.path={tmp_path / 'out'}"])
    data = load_task_data(cfg)
    assert len(data.splits["test"]) == 2 and data.scale == (1.0, 5.0) and "P1" in data.items


def test_text_helpers():
    assert clean_text("a<br/>b &amp; <p>c</p>") == "a b & c"
    assert clean_text("one two three", 7) == "one two..."
    assert parse_price("$1,299.00") == 1299.0 and parse_price("None") is None and parse_price(None) is None


def test_recipe_prepares_real_data_on_first_use(tmp_path):
    """data.prepare: raw files already in raw_dir (as the download leaves them) are prepared into data.path."""
    from kit.config import load_config
    from kit.data import load_task_data

    F.amazon2023(tmp_path / "raw" / "Digital_Music", gz=False)
    cfg = load_config("gpu-16gb", [f"data.path={tmp_path / 'prepared'}", f"data.prepare.raw_dir={tmp_path / 'raw'}",
                                   "data.prepare.kcore=0", "data.prepare.min_history=1", "data.prepare.history=2"])
    data = load_task_data(cfg)
    assert (tmp_path / "prepared" / "stats.json").is_file()
    assert len(data.splits["test"]) == 2 and "P1" in data.items


@pytest.mark.parametrize("block_bytes", [None, 150])  # 150: lines split across blocks, many blocks
def test_columnar_fast_path_matches_the_line_reader(tmp_path, monkeypatch, block_bytes):
    from kit.data import columnar

    if block_bytes:
        monkeypatch.setattr(columnar, "BLOCK_BYTES", block_bytes)
        assert len(list(columnar.line_blocks(F.amazon2023(tmp_path / "probe", gz=True) / "Digital_Music.jsonl.gz"))) > 5
    raw = F.amazon2023(tmp_path / "raw", gz=True)
    body = gzip.decompress((raw / "Digital_Music.jsonl.gz").read_bytes()).decode().splitlines()
    clean = [x for x in body if not x.startswith('{"rating": 4.0, "user_id": "E"')]  # polars reads it whole
    (raw / "Digital_Music.jsonl.gz").write_bytes(gzip.compress(("\n".join(clean) + "\n").encode()))
    fast = run("amazon2023", raw, tmp_path / "fast")
    slow = run("amazon2023", raw, tmp_path / "slow", engine="lines")
    assert {k: v for k, v in fast.items() if k != "seconds"} == {k: v for k, v in slow.items() if k != "seconds"}
    for name in ("interactions", "items", "test"):
        a = pl.read_parquet(tmp_path / "fast" / f"{name}.parquet")
        b = pl.read_parquet(tmp_path / "slow" / f"{name}.parquet")
        assert a.equals(b), name
    # histories hold references to interaction rows, resolved to the review text when rendered
    _, _, inter, _ = read_prepared(tmp_path / "fast")
    c = {(r["user_id"], r["item_id"]): r for r in pl.read_parquet(tmp_path / "fast" / "test.parquet").iter_rows(named=True)}
    ref = c[("C", "P2")]["item_history"][0]["ref"]
    assert inter.row(ref, named=True)["user_id"] == "A" and inter["review"][ref] == "nice"


def test_baselines_and_app_state_on_prepared_data(tmp_path):
    raw = F.movielens100k(tmp_path / "raw")
    run("movielens", raw, tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "kit.evaluate", "--baselines-only", "--data", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| matrix factorisation (SVD) | 2 |" in proc.stdout and "noise floor" not in proc.stdout
    from kit.app import build_state, get_sample, item_choices, parse_item_choice

    state = build_state(config="smoke", data_dir=str(tmp_path / "out"))
    sample = get_sample(state, "C", parse_item_choice(item_choices(state, "C")[0]))
    assert sample["item_id"] == "2" and [h["review"] for h in sample["user_history"]] == ["", ""]


def test_blocks_of_rows_change_nothing_in_the_prepared_files(tmp_path, monkeypatch):
    """Samples' lists and interactions written a few rows at a time: exactly the files of one block."""
    import pyarrow.parquet as pq

    from kit.data import samples as sample_module
    from kit.data.synthetic import make_catalog

    (tmp_path / "raw").mkdir()
    make_catalog(40, 30, 12, 0.3, 0, (1, 5)).interactions.drop("latent_mean").write_csv(tmp_path / "raw" / "ratings.csv")
    run("csv", tmp_path / "raw", tmp_path / "one")
    monkeypatch.setattr(sample_module, "BLOCK_ROWS", 7)
    run("csv", tmp_path / "raw", tmp_path / "blocks")
    for name in ("train", "valid", "test", "items", "interactions"):
        a = pl.read_parquet(tmp_path / "one" / f"{name}.parquet")
        b = pl.read_parquet(tmp_path / "blocks" / f"{name}.parquet")
        assert a.schema == b.schema and a.equals(b), name
    assert len(pl.read_parquet(tmp_path / "one" / "train.parquet")) > 100
    for name in ("train", "interactions"):
        assert pq.ParquetFile(tmp_path / "blocks" / f"{name}.parquet").num_row_groups > 10
    # histories still point at the right interaction rows
    _, _, inter, _ = read_prepared(tmp_path / "blocks")
    for s in pl.read_parquet(tmp_path / "blocks" / "train.parquet").head(50).iter_rows(named=True):
        for h in s["user_history"]:
            row = inter.row(h["ref"], named=True)
            assert (row["user_id"], row["item_id"], row["timestamp"]) == (s["user_id"], h["item_id"], h["timestamp"])


PIECES = [*"<>/ \t\n\xa0\u2003abpr1Hh&;=\"", "<br />", "<BR>", "<p>", "</div>", "<h2 class=x>", "< li>", "<brx>",
          "<b>", "&amp;", "  "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.none(), min_size=1, max_size=8))
def test_strip_markup_equals_the_plain_regex_chain(texts):
    from kit.data.columnar import _BLOCK, strip_markup

    s = pl.Series("review", texts, dtype=pl.Utf8)
    plain = (s.fill_null("").str.replace_all(_BLOCK, " ").str.replace_all(r"<[^>]{0,200}>", "")
             .str.replace_all(r"\s+", " ").str.strip_chars())
    assert strip_markup(s).to_list() == plain.to_list()


def test_goodreads_through_the_registry(tmp_path):
    """Unrated shelvings (rating 0) and empty or unparseable dates are dropped and counted; spoiler
    markup leaves the review text; string numbers and shelf counts are read."""
    ids = F.GOODREADS_IDS
    stats = run("goodreads", F.goodreads(tmp_path / "raw"), tmp_path / "out")
    got, items, inter, meta = samples_of(tmp_path / "out")
    expected_ok(got, ids.get)
    assert stats["rows_read"] == 10 and stats["rows_kept"] == 7
    assert stats["rows_dropped"] == {"unrated": 1, "missing_date_added": 1, "bad_date_added": 1}
    assert stats["items_without_metadata"] == 1 and meta["scale"] == [1.0, 5.0]
    assert inter["timestamp"].sort().to_list() == [t for *_, t in F.CLEAN]
    review = dict(zip(zip(inter["user_id"], inter["item_id"]), inter["review"]))
    assert review[(ids["A"], ids["P1"])] == "Loved it the butler did it a lot"
    assert review[(ids["C"], ids["P3"])] == "Gripping & long"
    p1 = items.filter(pl.col("item_id") == ids["P1"]).row(0, named=True)
    assert p1["title"] == "The Night Orchard (Orchard, #1)" and p1["categories"] == ["fantasy", "to-read", "owned"]
    assert p1["features"] == ["published 2005", "average rating 4.12"] and p1["description"] == "A slow burn. Then fire."
    p2 = items.filter(pl.col("item_id") == ids["P2"]).row(0, named=True)
    assert p2["title"] == "Salt Roads" and p2["features"] == ["pages 210"] and p2["categories"] == []
    with pytest.raises(DataError, match=r"goodreads_reviews_fantasy_paranormal.json.gz:3: field 'rating': 0 = shelved"):
        run("goodreads", tmp_path / "raw", tmp_path / "strict", strict=True)


def test_csv_with_unmatched_columns_stops_before_reading_and_names_the_map(tmp_path):
    raw = F.generic_csv(tmp_path / "raw")
    proc = subprocess.run([sys.executable, "-m", "kit.data", "prepare", "--source", "csv", "--path", str(raw),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not (tmp_path / "out").exists()
    [line] = [x for x in proc.stderr.splitlines() if "kit: error:" in x]
    assert "no column 'user_id', 'item_id', 'rating', 'timestamp'" in line
    assert line.endswith("--map user_id=COLUMN,item_id=COLUMN,rating=COLUMN,timestamp=COLUMN")
    with pytest.raises(DataError, match="header: reviewer, product, stars, when, comment"):
        run("csv", raw, tmp_path / "out", mapping={"user_id": "reviewer", "item_id": "product", "rating": "stars"})


def test_zero_samples_kept_is_an_error_and_writes_nothing(tmp_path):
    raw = F.generic_csv(tmp_path / "raw")
    mapping = {"user_id": "reviewer", "item_id": "product", "rating": "stars", "timestamp": "when"}
    with pytest.raises(DataError, match=r"kept 0 of \d+ rows .*nothing written"):
        run("csv", raw, tmp_path / "out", mapping=mapping, scale=(6.0, 10.0))  # every rating off the scale
    with pytest.raises(DataError, match="0 samples kept"):
        run("csv", raw, tmp_path / "out", mapping=mapping, min_history=50)
    assert not (tmp_path / "out").exists()
