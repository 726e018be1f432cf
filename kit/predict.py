"""`python -m kit.predict --run RUN_DIR --pairs pairs.csv --out preds.jsonl`

Rates any list of (user, item) pairs with a trained adapter (or the base model), against the
run's data set or a prepared one (`--data`), as of each pair's timestamp: histories and averages
use only interactions strictly earlier. A pair without a timestamp is rated as of the user's own
rating of the item when there is one (its truth is then reported, never shown to the model), else
as of now. Each output line: the pair, the moment, the truth when known, the reasoning, the parsed
rating and whether the answer passes the format rule. Batched; a stopped run resumes (pairs
already in --out are skipped). The app and the notebooks rate ad-hoc pairs the same way.

pairs.csv: a header with `user_id` and `item_id`, optionally `timestamp` (Unix seconds, or an ISO
date / date-time read as UTC); other columns are ignored.
"""
from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from kit.config import ConfigError, KitConfig, config_for_run
from kit.io import append_jsonl, read_jsonl


class PairsError(ValueError):
    """A pairs file that cannot be read: the message names the file, line and field."""


def _moment(text: str, where: str) -> int | None:
    """Unix seconds from a CSV cell: seconds as written, or an ISO date / date-time (UTC if no zone)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PairsError(f"{where}: timestamp {text[:40]!r} is neither Unix seconds nor an ISO date "
                         "(e.g. 1700000000 or 2023-11-14)") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp())


def read_pairs(path: Path | str) -> list[dict]:
    """The pairs of a CSV file, in file order, each with its line number (`line`)."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"{path}: no such file (a CSV with a header: user_id,item_id[,timestamp])")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("user_id", "item_id") if c not in (reader.fieldnames or [])]
        if missing:
            raise PairsError(f"{path}:1: header lacks {', '.join(missing)} (it has: "
                             f"{', '.join(reader.fieldnames or []) or 'nothing'}); the columns are "
                             "user_id,item_id[,timestamp]")
        pairs = []
        for row in reader:
            line = reader.line_num
            user, item = (row.get("user_id") or "").strip(), (row.get("item_id") or "").strip()
            for field, value in (("user_id", user), ("item_id", item)):
                if not value:
                    raise PairsError(f"{path}:{line}: {field} is empty")
            pairs.append({"line": line, "user_id": user, "item_id": item,
                          "timestamp": _moment(row.get("timestamp") or "", f"{path}:{line}")})
    if not pairs:
        raise PairsError(f"{path}: no pairs under the header")
    return pairs


def pair_key(pair: dict) -> str:
    """A pair's identity in the output (its line, so a pair listed twice is rated twice)."""
    return f"{pair['line']}\t{pair['user_id']}\t{pair['item_id']}"


def pair_sample(pair: dict, data, cfg: KitConfig, users: set[str]) -> tuple[dict | None, str | None]:
    """(sample, None), or (None, why the pair cannot be rated). `users`: the data's user ids."""
    from kit.data.samples import sample_as_of

    if pair["user_id"] not in users:
        return None, f"unknown user {pair['user_id']!r} (no rating by this user in the data)"
    if pair["item_id"] not in data.items:
        return None, f"unknown item {pair['item_id']!r} (not in the data's catalog)"
    sample = sample_as_of(data.interactions, pair["user_id"], pair["item_id"], pair["timestamp"],
                          cfg.data.history_user, cfg.data.history_item)
    if sample is None:
        return None, "no earlier rating by this user or of this item at that moment: nothing to reason from"
    return sample, None


def rated_already(out: Path) -> dict[str, dict]:
    """The records an earlier run appended to `out`, by pair key."""
    return {r["key"]: r for r in read_jsonl(out)}


def rate_pairs(loaded: Any, pairs: list[dict], data, cfg: KitConfig, out: Path,
               progress: Callable[[int], None] | None = None, done: dict[str, dict] | None = None) -> list[dict]:
    """One record per pair, appended to `out` batch by batch (pairs already there, in `done` when
    the caller has read them, are skipped)."""
    from kit.evaluate import answer_rows, fit_fields, ratings_of_answers

    done = rated_already(out) if done is None else dict(done)
    users = set(data.interactions["user_id"].unique().to_list())
    todo = [p for p in pairs if pair_key(p) not in done]
    batch = max(1, cfg.evaluation.batch_size)
    finished = len(pairs) - len(todo)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        built = [(p, *pair_sample(p, data, cfg, users)) for p in chunk]
        ready = [(p, s) for p, s, why in built if s is not None]
        answers = answer_rows(loaded, [s for _, s in ready], data, cfg) if ready else []
        answered = {pair_key(p): (s, a) for (p, s), a in zip(ready, answers)}
        for p, _, why in built:
            record: dict[str, Any] = {"key": pair_key(p), "line": p["line"], "user_id": p["user_id"],
                                      "item_id": p["item_id"]}
            if why is not None:
                record.update(error=why, prediction=None, valid=False)
            else:
                sample, (completions, fitted) = answered[pair_key(p)]
                parsed = ratings_of_answers(completions, data.scale, cfg.prompt.style)
                record.update(as_of=int(sample["timestamp"]), truth=sample["rating"], prediction=parsed["mean"],
                              valid=parsed["n_valid"] > 0, problems=parsed["first"].problems,
                              user_avg=float(sample["user_avg"]), item_avg=float(sample["item_avg"]),
                              reasoning=completions[0], **fit_fields(fitted))
            done[record["key"]] = record
            append_jsonl(out, record)
        finished += len(chunk)
        if progress:
            progress(finished)
    return [done[pair_key(p)] for p in pairs]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kit.predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a run folder (its config.yaml and adapter/)")
    ap.add_argument("--config", help="a recipe instead of a run (the base model unless --adapter)")
    ap.add_argument("--data", help="a prepared data folder (python -m kit.data prepare) instead of the run's data")
    ap.add_argument("--pairs", required=True, help="CSV: user_id,item_id[,timestamp]")
    ap.add_argument("--out", required=True, help="JSON Lines, one record per pair (appended; a rerun resumes)")
    ap.add_argument("--adapter", help="a LoRA adapter folder, or 'none' for the base model (default: the run's)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. evaluation.batch_size=16")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not (args.run or args.config):
            raise ConfigError("say which model rates: --run RUN_DIR, or --config RECIPE [--adapter DIR]")
        cfg, run_dir = config_for_run(args.run, args.config, args.overrides, args.data)
        pairs = read_pairs(args.pairs)
        from kit.evaluate import chosen_adapter

        adapter = chosen_adapter(args.adapter, run_dir)
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"--adapter {adapter}: no LoRA adapter there (adapter_config.json is missing)")
        out = Path(args.out)
        if out.exists() and not out.is_file():
            raise ConfigError(f"--out {out} is a folder: give a file, e.g. {out / 'predictions.jsonl'}")
        from kit.backend import select_backend

        select_backend(cfg.backend)  # unsloth before transformers/peft when it is the backend
        from tqdm.auto import tqdm

        from kit.data import load_task_data
        from kit.model import load_adapter

        data = load_task_data(cfg)
        loaded = load_adapter(cfg.model, adapter, device=cfg.device)
        done = rated_already(out)
        already = len({pair_key(p) for p in pairs} & set(done))
        if already:
            print(f"kit: {already} of {len(pairs)} pairs already rated in {out}; rating the rest", file=sys.stderr)
        bar = tqdm(total=len(pairs), initial=already, desc="rating pairs", unit="pair")
        records = rate_pairs(loaded, pairs, data, cfg, out, progress=lambda n: bar.update(n - bar.n), done=done)
        bar.close()
    except (ConfigError, PairsError, FileNotFoundError) as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    rated = [r for r in records if "error" not in r]
    valid = sum(r["valid"] for r in rated)
    with_truth = [r for r in rated if r["valid"] and r.get("truth") is not None]
    line = f"kit: {len(records)} pairs: {len(rated)} rated ({valid} in the answer format), " \
           f"{len(records) - len(rated)} could not be rated"
    if with_truth:
        mae = sum(abs(r["prediction"] - r["truth"]) for r in with_truth) / len(with_truth)
        line += f"; MAE {mae:.3f} on the {len(with_truth)} valid answers whose truth is known"
    print(line)
    print(f"kit: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
