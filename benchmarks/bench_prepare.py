"""Benchmark: Amazon-2023-format reviews -> prepared samples (rows/s, peak memory).

    .venv/bin/python benchmarks/bench_prepare.py [--sizes 1000000 5000000] [--naive-rows 8000] [--workdir DIR]

Writes synthetic review + meta JSONL files (invented content, real format) under a temp
folder, runs `python -m kit.data prepare` on each in a child process (peak RSS from the
OS), and, in the same run, a naive per-row implementation (one full-table filter per
target, as in the paper's released preprocessing) on a slice, for the ratio. With --workdir,
the synthetic files are written once and reused by later runs (so that two versions of the
code can be timed on the same files).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("great sound mix track album vocals bass guitar beat lyrics love boring loud soft classic fresh "
         "repeat favorite skip chorus band live studio remaster vinyl digital price value").split()


def write_files(n: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The review and meta files; kept from an earlier run in the same --workdir (writing 5M lines takes a while)."""
    reviews, meta = folder / "Digital_Music.jsonl", folder / "meta_Digital_Music.jsonl"
    done = folder / f".complete-seed{seed}"
    if done.is_file():
        return reviews, meta
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, n // 12), max(10, n // 40)
    users = rng.integers(0, n_users, n)
    items = (rng.zipf(1.3, n) - 1) % n_items
    ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[0.07, 0.08, 0.12, 0.23, 0.5])
    times = 1_500_000_000_000 + rng.integers(0, 200_000_000_000, n)
    texts = [" ".join(rng.choice(WORDS, rng.integers(20, 70))) + (" <br />" if k % 5 == 0 else "")
             for k in range(2000)]
    pick = rng.integers(0, len(texts), n)
    with reviews.open("w") as f:
        for k in range(n):
            f.write(json.dumps({"rating": ratings[k], "title": "headline", "text": texts[pick[k]], "images": [],
                                "asin": f"B{items[k]:08d}X", "parent_asin": f"B{items[k]:08d}",
                                "user_id": f"U{users[k]:09d}", "timestamp": int(times[k]), "helpful_vote": 0,
                                "verified_purchase": True}) + "\n")
    with meta.open("w") as f:
        for i in range(n_items):
            f.write(json.dumps({"parent_asin": f"B{i:08d}", "main_category": "Digital Music",
                                "title": f"Album {i}", "price": 9.99 if i % 3 else "None", "store": "Label",
                                "categories": ["Rock"] if i % 2 else [], "features": ["Remastered"],
                                "description": ["A record."], "details": {}}) + "\n")
    done.touch()
    return reviews, meta


def run_prepare(folder: Path, out: Path) -> tuple[float, float]:
    t0 = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "kit.data", "prepare", "--source", "amazon2023", "--path",
                           str(folder), "--out", str(out)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    seconds = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024  # KiB -> MiB (Linux)


def naive_rows_per_second(reviews: Path, rows: int, history: int = 10) -> float:
    """The per-row approach: for every target, filter the whole table for earlier rows."""
    import pandas as pd

    recs = []
    with reviews.open() as f:
        for _, line in zip(range(rows), f):
            r = json.loads(line)
            recs.append((r["user_id"], r["parent_asin"], r["rating"], r["timestamp"] // 1000))
    df = pd.DataFrame(recs, columns=["user_id", "item_id", "rating", "timestamp"])
    t0 = time.time()
    out = 0
    for row in df.itertuples():
        u = df[(df.user_id == row.user_id) & (df.timestamp < row.timestamp)].sort_values("timestamp").tail(history)
        i = df[(df.item_id == row.item_id) & (df.timestamp < row.timestamp)].sort_values("timestamp").tail(history)
        out += len(u) + len(i)
    return len(df) / (time.time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 5_000_000])
    ap.add_argument("--naive-rows", type=int, default=8000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kit-bench-"))
    print(f"cores: {os.cpu_count()}, workdir: {work}")
    print("| reviews | file MB | prepare s | rows/s | peak RSS MB | samples |")
    print("|---|---|---|---|---|---|")
    first = None
    for n in args.sizes:
        folder = work / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        reviews, _ = write_files(n, folder)
        seconds, peak = run_prepare(folder, work / f"out{n}")
        stats = json.loads((work / f"out{n}" / "stats.json").read_text())
        first = first or reviews
        print(f"| {n:,} | {reviews.stat().st_size / 1e6:.0f} | {seconds:.1f} | {n / seconds:,.0f} | {peak:,.0f} | "
              f"{sum(stats['samples'].values()):,} |", flush=True)
    naive = naive_rows_per_second(first, args.naive_rows)
    fast = args.sizes[0] / seconds if len(args.sizes) == 1 else None
    print(f"\nnaive per-row filter on the first {args.naive_rows:,} rows: {naive:,.0f} rows/s"
          + (f" (kit: {fast:,.0f} rows/s)" if fast else ""))


if __name__ == "__main__":
    main()
