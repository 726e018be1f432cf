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
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from kit.config import AutoPrepare, PrepareOptions
from kit.data import sources
from kit.data.registry import REGISTRY, get_source
from kit.data import samples as samples_module
from kit.data.samples import plan_samples, split_leave_last_out

ITEM_SCHEMA = {"item_id": pl.Utf8, "title": pl.Utf8, "categories": pl.List(pl.Utf8), "brand": pl.Utf8,
               "price": pl.Float64, "features": pl.List(pl.Utf8), "description": pl.Utf8}
INTER_SCHEMA = {"user_id": pl.Utf8, "item_id": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64, "review": pl.Utf8}
CHUNK = 200_000


# --------------------------------------------------------------------------- locating files

def _find(base: Path, patterns: tuple[str, ...], what: str, source: str) -> Path:
    if base.is_file():
        return base
    for pattern in patterns:
        hits = sorted(base.glob(pattern))
        if hits:
            return hits[0]
    raise sources.DataError(f"{base}: no {what} file for --source {source} (looked for {', '.join(patterns)})")


def locate(opts: PrepareOptions) -> tuple[Path, Path | None]:
    """(reviews file, items file) for a source, from a folder or explicit files."""
    source = get_source(opts.source)
    base = Path(opts.path)
    if not base.exists():
        raise sources.DataError(f"--path {base} does not exist")
    reviews = _find(base, source.reviews, source.what[0], opts.source)
    if opts.items_path:
        return reviews, Path(opts.items_path)
    if not base.is_dir() or not source.items:
        return reviews, None
    if not source.items_required:
        return reviews, next((p for pattern in source.items for p in sorted(base.glob(pattern))), None)
    return reviews, _find(base, source.items, source.what[1], opts.source)


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


def source_scale(opts: PrepareOptions) -> tuple[float, float]:
    return tuple(opts.scale) if opts.scale else get_source(opts.source).scale


def read_source(opts: PrepareOptions, stats: sources.ReadStats, progress=None) -> tuple[pl.DataFrame, pl.DataFrame]:
    source = get_source(opts.source)
    scale = source_scale(opts)
    reviews_file, items_file = locate(opts)
    interactions = None
    if source.columnar is not None and not opts.strict and opts.engine == "auto":
        from kit.data.columnar import read_reviews_columnar

        interactions = read_reviews_columnar(reviews_file, source.columnar, scale, opts.review_chars, stats)
    if interactions is None:
        interactions = _frames(source.read_reviews(reviews_file, opts, scale, stats, progress), INTER_SCHEMA)
    item_stats = sources.ReadStats()
    item_rows: Iterator[dict] = iter(())
    if items_file is not None and source.read_items is not None:
        item_rows = source.read_items(items_file, opts, item_stats)
    items = _frames(item_rows, ITEM_SCHEMA).unique("item_id", keep="first", maintain_order=True)
    stats.dropped.update({f"items_{k}": v for k, v in item_stats.dropped.items()})
    return interactions, items


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
    if get_source(opts.source).mapped:
        missing = [k for k in ("user_id", "item_id", "rating", "timestamp") if k not in opts.mapping]
        if missing and not opts.mapping:
            log("kit: no --map given: expecting columns user_id, item_id, rating, timestamp[, review]")
    scale = source_scale(opts)
    locate(opts)  # fail on a wrong path before any work starts
    stats = sources.ReadStats()
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
        dropped = _dropped(stats.dropped)
        raise sources.DataError(f"{opts.source}: kept 0 of {rows_read} rows (dropped: {dropped}); nothing written to {out}")
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
        plan, target_stats = plan_samples(inter, opts.history, opts.item_history if opts.item_history is not None
                                    else opts.history, opts.min_history, history_reviews=False)
        splits = split_leave_last_out(plan.targets) if opts.split == "loo" else time_split(plan.targets, opts.time_cut)
        caps = {"train": opts.max_train, "valid": opts.max_valid, "test": opts.max_test}
        for name, cap in caps.items():
            if cap is not None and len(splits[name]) > cap:
                splits[name] = splits[name].sample(n=cap, seed=opts.seed).sort(["timestamp", "user_id"])
        if not sum(len(v) for v in splits.values()):
            dropped = _dropped(stats.dropped, target_stats.dropped)
            raise sources.DataError(f"{opts.source}: 0 samples kept from {rows_read} rows (dropped: {dropped}): lower "
                              f"--min-history or --kcore, or widen the filters; nothing written to {out}")
        for name, targets in splits.items():
            _write_parquet(tmp / f"{name}.parquet", plan.blocks(targets, step))
        _write_parquet(tmp / "items.parquet", [items])

        histogram = inter.group_by("rating").len().sort("rating")
        result = {
            "source": opts.source, "rows_read": rows_read, "rows_kept": len(inter),
            "rows_dropped": dict(sorted((k, v) for k, v in stats.dropped.items() if v)),
            "first_example_of_each_drop": stats.examples,
            "targets_dropped": {k: v for k, v in target_stats.dropped.items()},
            "users": inter["user_id"].n_unique(), "items": inter["item_id"].n_unique(),
            "items_without_metadata": len(no_meta),
            "samples": {k: len(v) for k, v in splits.items()},
            "rating_histogram": {f"{r:g}": n for r, n in histogram.iter_rows()},
            "seconds": round(time.time() - t0, 2),
        }
        meta = {"source": opts.source, "scale": list(scale), "options": opts.model_dump(mode="json")}
        for name, obj in {"stats.json": result, "meta.json": meta}.items():
            (tmp / name).write_text(json.dumps(obj, indent=2, default=str) + "\n")
    dropped = ", ".join(f"{k} {v}" for k, v in result["rows_dropped"].items()) or "none"
    log(f"kit: {opts.source}: read {rows_read} rows, kept {len(inter)} (dropped: {dropped}); "
        f"{result['users']} users, {result['items']} items; samples train {len(splits['train'])} / valid "
        f"{len(splits['valid'])} / test {len(splits['test'])}; wrote {out} in {result['seconds']}s")
    return result


def _dropped(*counts: dict[str, int]) -> str:
    """'reason n, ...' over the non-zero counts, for an error that says why nothing was kept."""
    return ", ".join(f"{k} {v}" for c in counts for k, v in c.items() if v) or "none"


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
    folder = Path(path)
    if not (folder / "meta.json").is_file():
        raise sources.DataError(f"{folder} is not a prepared data folder (no meta.json): run python -m kit.data prepare ... "
                          f"--out {folder}")
    splits = {k: pl.read_parquet(folder / f"{k}.parquet") for k in ("train", "valid", "test")}
    return splits, pl.read_parquet(folder / "items.parquet"), pl.read_parquet(folder / "interactions.parquet"), \
        json.loads((folder / "meta.json").read_text())


def load_prepared(path: str | Path, split: str = "train", prompt_style: str | None = None):
    """A `datasets.Dataset` of one split: user_id, item_id, timestamp, rating, user_history,
    item_history, user_avg, item_avg, counts, rating_min/max, the target item's fields, and
    (with prompt_style) a chat `prompt` rendered lazily on access."""
    from datasets import Dataset

    splits, items, interactions, meta = read_prepared(path)
    if split not in splits:
        raise sources.DataError(f"split '{split}': choose train, valid or test")
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


def prepare_on_first_use(auto: AutoPrepare, data_path: str) -> dict:
    """A recipe's `data.prepare`: download the raw files (when the source can), then prepare them
    into data.path with the recipe's prepare options, unchanged."""
    source = get_source(auto.source)
    raw = Path(auto.path or Path(auto.raw_dir) / auto.category)
    if source.download is not None:
        print(f"kit: {data_path} not found: downloading {auto.source} '{auto.category}' to {raw} and preparing it")
        source.download(auto.category, raw)
    fields = auto.model_dump(exclude={"category", "raw_dir"}) | {"path": str(raw), "out": auto.out or data_path}
    return prepare(PrepareOptions(**fields))


# --------------------------------------------------------------------------- CLI

def add_model_options(parser: argparse.ArgumentParser, model: type[PrepareOptions],
                      choices: dict[str, list[str]] | None = None) -> None:
    """One command-line option per field of `model`: its name (or `flag`), type, default and help.
    Lists, pairs and mappings are taken as text and parsed by the model's own validators."""
    import typing

    for name, info in model.model_fields.items():
        flag = (info.json_schema_extra or {}).get("flag", "--" + name.replace("_", "-"))
        kind = info.annotation
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) is typing.Union and len(inner) == 1:
            kind = inner[0]
        help_text = info.description or ""
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=info.default, help=help_text)
            continue
        extra: dict = {"choices": (choices or {}).get(name)}
        if typing.get_origin(kind) is typing.Literal:
            extra["choices"] = list(typing.get_args(kind))
        elif kind in (int, float):
            extra["type"] = kind
        if info.is_required():
            extra["required"] = True
        else:
            extra["default"] = info.default
            if info.default not in (None, [], {}):
                shown = ",".join(f"{x:g}" for x in info.default) if isinstance(info.default, tuple) else info.default
                help_text += f" (default: {shown})"
        parser.add_argument(flag, dest=name, help=help_text, **extra)


def options_from_args(args: argparse.Namespace, model: type[PrepareOptions] = PrepareOptions) -> PrepareOptions:
    """The parsed options as the model, or a one-line DataError naming the option and the fix."""
    from pydantic import ValidationError

    try:
        return model(**{name: getattr(args, name) for name in model.model_fields})
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        info = model.model_fields.get(name)
        flag = ((info.json_schema_extra or {}).get("flag") if info else None) or "--" + name.replace("_", "-")
        raise sources.DataError(f"{flag}: {first['msg'].removeprefix('Value error, ')}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kit.data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    prepare_cmd = sub.add_parser("prepare", help="files -> interactions, items and leak-free samples")
    add_model_options(prepare_cmd, PrepareOptions, choices={"source": list(REGISTRY)})
    downloadable = [name for name, source in REGISTRY.items() if source.download is not None]
    download_cmd = sub.add_parser("download", help="raw files of one category, for the sources the kit can download")
    download_cmd.add_argument("--source", choices=downloadable, default=downloadable[0])
    download_cmd.add_argument("--category", required=True, help="e.g. Digital_Music, All_Beauty, Gift_Cards")
    download_cmd.add_argument("--dest", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "download":
            for file in REGISTRY[args.source].download(args.category, args.dest):
                print(file)
            return 0
        prepare(options_from_args(args))
    except sources.DataError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    return 0
