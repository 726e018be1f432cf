"""`python -m kit.data prepare|download ...`: from downloaded files to leak-free samples.

    python -m kit.data prepare --source amazon2023 --path DIR_OR_FILES --out data/music
    python -m kit.data download --category Digital_Music --dest raw/   (Amazon 2023, from the Hub)

Output folder (written to a temp folder, then renamed into place: an interrupted run
leaves nothing half-written): train/valid/test.parquet (samples), items.parquet,
interactions.parquet, stats.json (rows read/kept, drops by reason, users, items,
samples per split, rating histogram), meta.json (source, scale, options).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from kit.data import sources as S
from kit.data import samples as samples_module
from kit.data.samples import plan_samples, split_leave_last_out

SOURCES = ("amazon2023", "amazon2018", "yelp", "movielens", "csv", "jsonl")
ITEM_SCHEMA = {"item_id": pl.Utf8, "title": pl.Utf8, "categories": pl.List(pl.Utf8), "brand": pl.Utf8,
               "price": pl.Float64, "features": pl.List(pl.Utf8), "description": pl.Utf8}
INTER_SCHEMA = {"user_id": pl.Utf8, "item_id": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64, "review": pl.Utf8}
CHUNK = 200_000


@dataclass
class PrepareOptions:
    source: str
    path: str
    out: str
    items_path: str | None = None
    history: int = 10
    item_history: int | None = None
    min_history: int = 5
    kcore: int = 0
    split: str = "loo"                 # loo = per-user leave-last-out; time = global time cut
    time_cut: tuple[float, float] = (0.8, 0.9)
    max_train: int | None = None
    max_valid: int | None = None
    max_test: int | None = None
    seed: int = 0
    categories: list[str] = field(default_factory=list)
    scale: tuple[float, float] | None = None
    review_chars: int = 400
    description_chars: int = 400
    strict: bool = False
    mapping: dict = field(default_factory=dict)
    item_mapping: dict = field(default_factory=dict)
    time_unit: str = "s"
    engine: str = "auto"               # auto: columnar fast path where possible; lines: always line by line


DEFAULT_SCALES = {"amazon2023": (1.0, 5.0), "amazon2018": (1.0, 5.0), "yelp": (1.0, 5.0), "movielens": (1.0, 5.0),
                  "csv": (1.0, 5.0), "jsonl": (1.0, 5.0)}


# --------------------------------------------------------------------------- locating files

def _find(base: Path, patterns: list[str], what: str, source: str) -> Path:
    if base.is_file():
        return base
    for pattern in patterns:
        hits = sorted(base.glob(pattern))
        if hits:
            return hits[0]
    raise S.DataError(f"{base}: no {what} file for --source {source} (looked for {', '.join(patterns)})")


def locate(opts: PrepareOptions) -> tuple[Path, Path | None]:
    """(reviews file, items file) for a source, from a folder or explicit files."""
    base = Path(opts.path)
    if not base.exists():
        raise S.DataError(f"--path {base} does not exist")
    items = Path(opts.items_path) if opts.items_path else None
    if opts.source == "amazon2023":
        reviews = _find(base, ["[!m]*.jsonl.gz", "[!m]*.jsonl", "[!m]*.json.gz"], "review", opts.source)
        items = items or (_find(base, ["meta_*.jsonl.gz", "meta_*.jsonl"], "meta", opts.source) if base.is_dir() else None)
    elif opts.source == "amazon2018":
        reviews = _find(base, ["*_5.json.gz", "*_5.json", "[!m]*.json.gz", "[!m]*.json"], "review", opts.source)
        items = items or (_find(base, ["meta_*.json.gz", "meta_*.json"], "meta", opts.source) if base.is_dir() else None)
    elif opts.source == "yelp":
        reviews = _find(base, ["*review*.json", "*review*.json.gz"], "review", opts.source)
        items = items or (_find(base, ["*business*.json", "*business*.json.gz"], "business", opts.source)
                          if base.is_dir() else None)
    elif opts.source == "movielens":
        reviews = _find(base, ["u.data", "ratings.dat"], "ratings (u.data or ratings.dat)", opts.source)
        items = items or next((p for p in (base / "u.item", base / "movies.dat") if base.is_dir() and p.is_file()), None)
    else:
        reviews = _find(base, ["*.csv", "*.jsonl", "*.jsonl.gz"], "interactions", opts.source)
    return reviews, items


# --------------------------------------------------------------------------- reading

def _frames(rows: Iterator[dict], schema: dict) -> pl.DataFrame:
    """Rows -> one DataFrame, built in chunks so memory holds Arrow columns, not Python dicts."""
    chunks, buf = [], []
    for row in rows:
        buf.append(row)
        if len(buf) >= CHUNK:
            chunks.append(pl.DataFrame(buf, schema=schema))
            buf = []
    if buf or not chunks:
        chunks.append(pl.DataFrame(buf, schema=schema))
    return pl.concat(chunks, how="vertical")


def read_source(opts: PrepareOptions, stats: S.ReadStats, progress=None) -> tuple[pl.DataFrame, pl.DataFrame]:
    scale = opts.scale or DEFAULT_SCALES[opts.source]
    reviews, items_file = locate(opts)
    item_stats = S.ReadStats()
    rc, dc = opts.review_chars, opts.description_chars
    fast = None
    if opts.source in ("amazon2023", "amazon2018", "yelp") and not opts.strict and opts.engine == "auto":
        from kit.data.columnar import read_reviews_columnar

        fast = read_reviews_columnar(reviews, opts.source, scale, rc, stats)
    if fast is not None:
        inter = fast
    elif opts.source in ("amazon2023", "amazon2018", "yelp", "jsonl") or (opts.source == "csv" and reviews.suffix != ".csv"):
        to_row = {"amazon2023": S.amazon2023_review, "amazon2018": S.amazon2018_review, "yelp": S.yelp_review}.get(
            opts.source)
        to_row = to_row(scale, rc) if to_row else S.generic_review(opts.mapping, scale, rc, opts.time_unit)
        inter = _frames(S.read_json_lines(reviews, to_row, stats, opts.strict, progress), INTER_SCHEMA)
    elif opts.source == "csv":
        inter = _frames(S.read_csv_rows(reviews, S.generic_review(opts.mapping, scale, rc, opts.time_unit), stats,
                                        opts.strict), INTER_SCHEMA)
    else:  # movielens
        sep = "\t" if reviews.name == "u.data" else "::"
        inter = _frames(S.read_delimited(reviews, sep, S.movielens_rating(scale), stats, opts.strict), INTER_SCHEMA)

    item_rows: Iterator[dict] = iter(())
    if items_file is not None:
        if opts.source == "movielens":
            sep, fn = ("|", S.ml100k_item) if items_file.name == "u.item" else ("::", S.ml1m_item)
            item_rows = S.read_delimited(items_file, sep, fn, item_stats, opts.strict)
        elif opts.source in ("csv",) and items_file.suffix == ".csv":
            item_rows = S.read_csv_rows(items_file, S.generic_item(opts.item_mapping, dc), item_stats, opts.strict)
        else:
            fn = {"amazon2023": S.amazon2023_item, "amazon2018": S.amazon2018_item, "yelp": S.yelp_item}.get(opts.source)
            fn = fn(dc) if fn else S.generic_item(opts.item_mapping, dc)
            item_rows = S.read_json_lines(items_file, fn, item_stats, opts.strict)
    items = _frames(item_rows, ITEM_SCHEMA).unique("item_id", keep="first", maintain_order=True)
    stats.dropped.update({f"items_{k}": v for k, v in item_stats.dropped.items()})
    return inter, items


# --------------------------------------------------------------------------- the pipeline

def kcore(inter: pl.DataFrame, k: int) -> pl.DataFrame:
    """Keep users and items with at least k interactions, repeatedly, until stable."""
    while k > 0:
        before = len(inter)
        inter = inter.filter((pl.len().over("user_id") >= k) & (pl.len().over("item_id") >= k))
        if len(inter) == before:
            break
    return inter


def time_split(samples: pl.DataFrame, cut: tuple[float, float]) -> dict[str, pl.DataFrame]:
    lo, hi = samples["timestamp"].quantile(cut[0]), samples["timestamp"].quantile(cut[1])
    return {"train": samples.filter(pl.col("timestamp") < lo),
            "valid": samples.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi)),
            "test": samples.filter(pl.col("timestamp") >= hi)}


def prepare(opts: PrepareOptions, log=print) -> dict:
    from tqdm.auto import tqdm

    t0 = time.time()
    out = Path(opts.out)
    if opts.source not in SOURCES:
        raise S.DataError(f"--source {opts.source}: choose one of {', '.join(SOURCES)}")
    if opts.source in ("csv", "jsonl"):
        missing = [k for k in ("user_id", "item_id", "rating", "timestamp") if k not in opts.mapping]
        if missing and not opts.mapping:
            log("kit: no --map given: expecting columns user_id, item_id, rating, timestamp[, review]")
    scale = opts.scale or DEFAULT_SCALES[opts.source]
    locate(opts)  # fail on a wrong path before any work starts
    stats = S.ReadStats()
    bar = tqdm(desc=f"reading {opts.source}", unit=" rows", unit_scale=True)
    inter, items = read_source(opts, stats, progress=bar.update)
    bar.close()
    rows_read = stats.rows_read
    # the review texts are the bulk of the table and only go to interactions.parquet: they stay in
    # reading order, aside, and every step below works on ids, ratings and times (`_src`: reading row)
    reviews = inter.get_column("review")
    inter = inter.drop("review").rechunk().with_row_index("_src")
    # duplicates: the same user rating the same item again -> keep the earliest
    before = len(inter)
    inter = inter.sort(["timestamp", "user_id", "item_id"]).unique(["user_id", "item_id"], keep="first",
                                                                     maintain_order=True)
    stats.dropped["duplicate_user_item"] += before - len(inter)
    if opts.categories:
        wanted = [c.lower() for c in opts.categories]
        keep = items.filter(pl.col("categories").list.eval(pl.element().str.to_lowercase().is_in(wanted)).list.any())
        before = len(inter)
        inter = inter.join(keep.select("item_id"), on="item_id", how="semi")
        stats.dropped["not_in_categories"] += before - len(inter)
    before = len(inter)
    inter = kcore(inter, opts.kcore)
    stats.dropped["kcore"] += before - len(inter)
    no_meta = inter.select("item_id").unique(maintain_order=True).join(items.select("item_id"), on="item_id",
                                                                       how="anti")  # first-seen order: same file each run
    # items without metadata keep their interactions, with a minimal item record
    if len(no_meta):
        items = pl.concat([items, no_meta.with_columns(
            pl.concat_str([pl.lit("item "), pl.col("item_id")]).alias("title"),
            pl.lit([], dtype=pl.List(pl.Utf8)).alias("categories"), pl.lit(None, dtype=pl.Utf8).alias("brand"),
            pl.lit(None, dtype=pl.Float64).alias("price"), pl.lit([], dtype=pl.List(pl.Utf8)).alias("features"),
            pl.lit("").alias("description")).select(list(ITEM_SCHEMA))])
    items = items.join(inter.select("item_id").unique(), on="item_id", how="semi")

    if not len(inter):
        dropped = ", ".join(f"{k} {v}" for k, v in stats.dropped.items() if v) or "none"
        raise S.DataError(f"{opts.source}: kept 0 of {rows_read} rows (dropped: {dropped}); nothing written to {out}")
    src = inter.get_column("_src")
    inter = inter.drop("_src")
    step = samples_module.BLOCK_ROWS
    with _atomic_folder(out) as tmp:
        # the interactions go first, so that the review texts are freed before any sample is built
        _write_parquet(tmp / "interactions.parquet", (
            inter.slice(first, step).with_columns(reviews.gather(src.slice(first, step)).alias("review"))
            for first in range(0, max(len(inter), 1), step)))
        del reviews, src
        # history lists are built (and written) one block of targets at a time: splits and caps are
        # decided on the targets' scalar columns alone
        plan, sstats = plan_samples(inter, opts.history, opts.item_history if opts.item_history is not None
                                    else opts.history, opts.min_history, history_reviews=False)
        splits = split_leave_last_out(plan.targets) if opts.split == "loo" else time_split(plan.targets, opts.time_cut)
        caps = {"train": opts.max_train, "valid": opts.max_valid, "test": opts.max_test}
        for name, cap in caps.items():
            if cap is not None and len(splits[name]) > cap:
                splits[name] = splits[name].sample(n=cap, seed=opts.seed).sort(["timestamp", "user_id"])
        if not sum(len(v) for v in splits.values()):
            dropped = ", ".join(f"{k} {v}" for k, v in [*stats.dropped.items(), *sstats.dropped.items()] if v)
            raise S.DataError(f"{opts.source}: 0 samples kept from {rows_read} rows (dropped: {dropped}): lower "
                              f"--min-history or --kcore, or widen the filters; nothing written to {out}")
        for name, targets in splits.items():
            _write_parquet(tmp / f"{name}.parquet", plan.blocks(targets, step))
        _write_parquet(tmp / "items.parquet", [items])

        hist = inter.group_by("rating").len().sort("rating")
        result = {
            "source": opts.source, "rows_read": rows_read, "rows_kept": len(inter),
            "rows_dropped": dict(sorted((k, v) for k, v in stats.dropped.items() if v)),
            "first_example_of_each_drop": stats.examples,
            "targets_dropped": {k: v for k, v in sstats.dropped.items()},
            "users": inter["user_id"].n_unique(), "items": inter["item_id"].n_unique(),
            "items_without_metadata": len(no_meta),
            "samples": {k: len(v) for k, v in splits.items()},
            "rating_histogram": {f"{r:g}": n for r, n in hist.iter_rows()},
            "seconds": round(time.time() - t0, 2),
        }
        meta = {"source": opts.source, "scale": list(scale), "options": {k: v for k, v in asdict(opts).items()}}
        for name, obj in {"stats.json": result, "meta.json": meta}.items():
            (tmp / name).write_text(json.dumps(obj, indent=2, default=str) + "\n")
    dropped = ", ".join(f"{k} {v}" for k, v in result["rows_dropped"].items()) or "none"
    log(f"kit: {opts.source}: read {rows_read} rows, kept {len(inter)} (dropped: {dropped}); "
        f"{result['users']} users, {result['items']} items; samples train {len(splits['train'])} / valid "
        f"{len(splits['valid'])} / test {len(splits['test'])}; wrote {out} in {result['seconds']}s")
    return result


def _write_parquet(path: Path, blocks: Iterable[pl.DataFrame]) -> None:
    """One parquet file from blocks of rows (a row group or more each): only one block in memory."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for block in blocks:
            table = block.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


@contextmanager
def _atomic_folder(out: Path) -> Iterator[Path]:
    """A temp folder beside `out` to write into; it replaces `out` when the block ends, and is
    removed if the block fails: an interrupted run leaves nothing half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- reading prepared data

def read_prepared(path: str | Path) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame, dict]:
    d = Path(path)
    if not (d / "meta.json").is_file():
        raise S.DataError(f"{d} is not a prepared data folder (no meta.json): run python -m kit.data prepare ... "
                          f"--out {d}")
    splits = {k: pl.read_parquet(d / f"{k}.parquet") for k in ("train", "valid", "test")}
    return splits, pl.read_parquet(d / "items.parquet"), pl.read_parquet(d / "interactions.parquet"), \
        json.loads((d / "meta.json").read_text())


def load_prepared(path: str | Path, split: str = "train", prompt_style: str | None = None):
    """A `datasets.Dataset` of one split: user_id, item_id, timestamp, rating, user_history,
    item_history, user_avg, item_avg, counts, rating_min/max, the target item's fields, and
    (with prompt_style) a chat `prompt` rendered lazily on access."""
    from datasets import Dataset

    splits, items, interactions, meta = read_prepared(path)
    if split not in splits:
        raise S.DataError(f"split '{split}': choose train, valid or test")
    lo, hi = meta["scale"]
    frame = splits[split].join(items.rename({c: f"item_{c}" for c in items.columns if c != "item_id"}),
                               on="item_id", how="left").with_columns(
        pl.lit(float(lo)).alias("rating_min"), pl.lit(float(hi)).alias("rating_max"))
    ds = Dataset.from_polars(frame)
    if prompt_style:
        from kit.prompts import build_messages

        from kit.data.samples import attach_reviews

        lookup = {r["item_id"]: r for r in items.iter_rows(named=True)}
        reviews = interactions["review"].to_list()

        def render(batch):
            rows = [attach_reviews(dict(zip(batch, vals)), reviews) for vals in zip(*batch.values())]
            batch["prompt"] = [build_messages(r, lookup, prompt_style, (lo, hi)) for r in rows]
            return batch

        ds.set_transform(render)
    return ds


# --------------------------------------------------------------------------- download (Amazon 2023)

def download_amazon2023(category: str, dest: str | Path) -> list[Path]:
    """Raw review + meta files of one Amazon Reviews 2023 category from the Hugging Face Hub
    (the dataset's loading script no longer runs under datasets >= 4), as
    dest/<category>.jsonl and dest/meta_<category>.jsonl. Files already there are kept."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {f"raw/review_categories/{category}.jsonl": dest / f"{category}.jsonl",
              f"raw/meta_categories/meta_{category}.jsonl": dest / f"meta_{category}.jsonl"}
    for remote, local in wanted.items():
        if local.is_file() or local.with_suffix(".jsonl.gz").is_file():
            continue
        from huggingface_hub import hf_hub_download

        cached = hf_hub_download(repo_id="McAuley-Lab/Amazon-Reviews-2023", filename=remote, repo_type="dataset")
        tmp = local.with_name("." + local.name)
        shutil.copyfile(cached, tmp)
        os.replace(tmp, local)
    return list(wanted.values())


# --------------------------------------------------------------------------- CLI

def _pair(text: str, name: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise S.DataError(f"{name} takes two numbers like 1,5 (got {text!r})") from None
    if not a < b:
        raise S.DataError(f"{name}: {a:g} must be below {b:g}")
    return a, b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kit.data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="files -> interactions, items and leak-free samples")
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--path", required=True, help="the downloaded folder, or the reviews/ratings file")
    p.add_argument("--items", help="the items/meta file, when --path is a file")
    p.add_argument("--out", required=True)
    p.add_argument("--history", type=int, default=10, help="N: user's last N earlier interactions (paper: 10)")
    p.add_argument("--item-history", type=int, default=None, help="item's last N by others (default: --history)")
    p.add_argument("--min-history", type=int, default=5, help="drop targets with fewer history entries in total")
    p.add_argument("--kcore", type=int, default=0, help="keep users and items with >= k interactions (0: off)")
    p.add_argument("--split", choices=["loo", "time"], default="loo",
                   help="loo: per-user leave-last-out (valid = 2nd last, test = last); time: global time cut")
    p.add_argument("--time-cut", default="0.8,0.9", help="quantiles of target time for valid and test starts")
    p.add_argument("--max-train", type=int)
    p.add_argument("--max-valid", type=int)
    p.add_argument("--max-test", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--categories", default="", help="comma-separated item categories to keep")
    p.add_argument("--scale", default=None, help="rating scale, e.g. 1,5 or 1,10 (default: the source's)")
    p.add_argument("--review-chars", type=int, default=400)
    p.add_argument("--description-chars", type=int, default=400)
    p.add_argument("--map", default=None, help="csv/jsonl: canonical=column pairs, e.g. user_id=reviewer,rating=stars")
    p.add_argument("--item-map", default=None, help="csv/jsonl items: item_id=...,title=...,categories=...")
    p.add_argument("--time-unit", choices=["s", "ms", "iso"], default="s")
    p.add_argument("--strict", action="store_true", help="stop at the first bad line (file, line, field)")
    d = sub.add_parser("download", help="Amazon Reviews 2023 raw files of one category from the Hub")
    d.add_argument("--category", required=True, help="e.g. Digital_Music, All_Beauty, Gift_Cards")
    d.add_argument("--dest", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "download":
            for f in download_amazon2023(args.category, args.dest):
                print(f)
            return 0
        opts = PrepareOptions(
            source=args.source, path=args.path, out=args.out, items_path=args.items, history=args.history,
            item_history=args.item_history, min_history=args.min_history, kcore=args.kcore, split=args.split,
            time_cut=_pair(args.time_cut, "--time-cut"), max_train=args.max_train, max_valid=args.max_valid,
            max_test=args.max_test, seed=args.seed,
            categories=[c.strip() for c in args.categories.split(",") if c.strip()],
            scale=_pair(args.scale, "--scale") if args.scale else None, review_chars=args.review_chars,
            description_chars=args.description_chars, strict=args.strict, mapping=S.parse_mapping(args.map),
            item_mapping=S.parse_mapping(args.item_map), time_unit=args.time_unit)
        prepare(opts)
    except S.DataError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    return 0
