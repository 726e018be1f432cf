"""Data for a run: samples (leak-free), the items they refer to, the rating scale.

`load_task_data(cfg)` is what train/evaluate/app call; the synthetic catalog is the
embedded default. Prompts are rendered lazily (`to_prompt_dataset`), only for the
rows a run actually uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import polars as pl

from kit.config import KitConfig, check_scale
from kit.data.samples import SampleStats, build_samples, split_leave_last_out
from kit.data.synthetic import SyntheticCatalog, make_catalog


@dataclass
class TaskData:
    splits: dict[str, pl.DataFrame]
    items: dict[str, dict]
    scale: tuple[float, float]
    stats: SampleStats
    interactions: pl.DataFrame
    catalog: Optional[SyntheticCatalog] = None
    reviews: Optional[list[str]] = None   # review texts by interaction row, for histories that carry `ref`

    def with_reviews(self, sample: dict) -> dict:
        from kit.data.samples import attach_reviews

        return attach_reviews(sample, self.reviews)

    def training_interactions(self) -> pl.DataFrame:
        """Every interaction that is not a valid or test target (what classical baselines fit on)."""
        from kit.baselines import training_interactions

        return training_interactions(self.interactions, [self.splits["valid"], self.splits["test"]])

    def split(self, name: str, limit: int | None = None, seed: int = 0, seeded_order: bool = False) -> pl.DataFrame:
        """The split's pairs, or `limit` of them: the first `limit` of a seeded permutation, so a
        smaller limit picks a subset of a larger one. Rows come in chronological order or, with
        `seeded_order`, in the permutation's order: a pass over them that stops part-way has then
        done exactly the pairs a smaller limit picks (what evaluation resume relies on)."""
        frame = self.splits[name]
        if not seeded_order and (limit is None or len(frame) <= limit):
            return frame
        import numpy as np

        order = np.random.default_rng(seed).permutation(len(frame))[:limit]
        if seeded_order:
            return frame[order]
        return frame[np.sort(order)].sort(["timestamp", "user_id"], maintain_order=True)


def load_task_data(cfg: KitConfig) -> TaskData:
    d = cfg.data
    if d.source == "synthetic":
        s = d.synthetic
        catalog = make_catalog(s.n_users, s.n_items, s.interactions_per_user, s.noise, s.seed, s.scale)
        samples, stats = build_samples(catalog.interactions, d.history_user, d.history_item, d.min_history)
        items = {r["item_id"]: r for r in catalog.items.iter_rows(named=True)}
        return TaskData(splits=split_leave_last_out(samples), items=items, scale=catalog.scale, stats=stats,
                        interactions=catalog.interactions, catalog=catalog)
    if d.source == "prepared":
        from pathlib import Path

        from kit.data.prepare import read_prepared

        if d.prepare is not None and not (Path(d.path) / "meta.json").is_file():
            auto_prepare(cfg)
        splits, items, interactions, meta = read_prepared(d.path)
        scale = (float(meta["scale"][0]), float(meta["scale"][1]))
        if cfg.rating_scale is not None:
            check_scale((cfg.rating_scale.min, cfg.rating_scale.max), scale, f"{d.path}/meta.json")
        return TaskData(splits=splits, items={r["item_id"]: r for r in items.iter_rows(named=True)}, scale=scale,
                        stats=SampleStats(kept=sum(len(v) for v in splits.values())), interactions=interactions,
                        reviews=interactions["review"].to_list())
    raise ValueError(f"data.source '{d.source}' is not supported")


def auto_prepare(cfg: KitConfig) -> None:
    """First use of a recipe on real data: download the raw files, then prepare them into data.path."""
    from kit.data.prepare import prepare_on_first_use

    prepare_on_first_use(cfg.data.prepare, cfg.data.path)


def sample_messages(row: dict, data: TaskData, cfg: KitConfig) -> list[dict[str, str]]:
    from kit.prompts import build_messages

    return build_messages(data.with_reviews(row), data.items, cfg.prompt.style, data.scale,
                          template=cfg.prompt.template, review_chars=cfg.data.review_chars,
                          description_chars=cfg.data.description_chars)


@dataclass
class FittedPrompt:
    text: Optional[str]  # the chat-rendered prompt; None when it is over budget even with no history entry
    tokens: int          # its length (with every history entry left out, when it does not fit)
    dropped: int         # history entries left out to fit, oldest first


def fit_prompt(row: dict, data: TaskData, cfg: KitConfig, tokenizer: Any, budget: int) -> FittedPrompt:
    """The sample's prompt within `budget` tokens (counted as training counts them): history
    entries, the user's and the item's together, are left out oldest first until it fits.
    Averages stay over all earlier interactions. vLLM refuses a prompt that is too long (the
    whole batch fails) and transformers would cut the answer short, so nothing longer goes out."""
    from kit.prompts import render_chat

    sample = data.with_reviews(row)
    order = sorted((h["timestamp"], key, i) for key in ("user_history", "item_history")
                   for i, h in enumerate(sample[key]))

    def render(k: int) -> tuple[str, int]:
        drop = {(key, i) for _, key, i in order[:k]}
        trimmed = {**sample, **{key: [h for i, h in enumerate(sample[key]) if (key, i) not in drop]
                                for key in ("user_history", "item_history")}}
        text = render_chat(tokenizer, sample_messages(trimmed, data, cfg))  # reviews attached: kept as they are
        return text, _tokens(tokenizer, text)

    text, tokens = render(0)
    if tokens <= budget:
        return FittedPrompt(text, tokens, 0)
    lo, hi, best = 1, len(order), None
    while lo <= hi:  # the fewest entries to leave out (length falls as entries go)
        mid = (lo + hi) // 2
        text, tokens = render(mid)
        if tokens <= budget:
            best, hi = FittedPrompt(text, tokens, mid), mid - 1
        else:
            lo = mid + 1
    return best or FittedPrompt(None, render(len(order))[1], len(order))


def count_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Tokens of the chat-rendered prompt, generation header included."""
    from kit.prompts import render_chat

    return _tokens(tokenizer, render_chat(tokenizer, messages))


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def to_prompt_dataset(frame: pl.DataFrame, data: TaskData, cfg: KitConfig, tokenizer: Any = None,
                      with_reference: bool = False):
    """A `datasets.Dataset` with chat `prompt` messages plus the columns rewards read
    (`rating`, `rating_min`, `rating_max`, ids, averages). Prompts over
    prompt.max_prompt_tokens are dropped; the count is returned beside the dataset."""
    from datasets import Dataset

    rows, too_long = [], 0
    for row in frame.iter_rows(named=True):
        messages = sample_messages(row, data, cfg)
        if tokenizer is not None:
            if count_prompt_tokens(tokenizer, messages) > cfg.prompt.max_prompt_tokens:
                too_long += 1
                continue
        record = {"prompt": messages, "rating": float(row["rating"]), "rating_min": data.scale[0],
                  "rating_max": data.scale[1], "user_id": row["user_id"], "item_id": row["item_id"],
                  "user_avg": float(row["user_avg"]), "item_avg": float(row["item_avg"])}
        if with_reference:
            if data.catalog is None:
                raise ValueError("reference answers need the synthetic catalog (or priming.traces=FILE)")
            record["completion"] = [{"role": "assistant",
                                     "content": data.catalog.reference_answer(row, cfg.data.review_chars)}]
        rows.append(record)
    return Dataset.from_list(rows), too_long


@dataclass
class ReferenceSelection:
    frame: pl.DataFrame  # the training pairs whose reference answers are used
    drawn: int           # pairs looked at to find them
    kept: int            # of those, answers kept


def select_references(data: TaskData, n: int, keep: str, review_chars: int, seed: int) -> ReferenceSelection:
    """The training pairs whose synthetic reference answers prime the model: the first `n` of a
    seeded order of the train split, or with `keep="correct"` (RecOne's rejection sampling) the
    first `n` whose answer's rating equals the truth, and how many had to be drawn for them."""
    if data.catalog is None:
        raise ValueError("reference answers need the synthetic catalog (or priming.traces=FILE)")
    ordered = data.split("train", len(data.splits["train"]), seed=seed, seeded_order=True)
    if keep == "all":
        picked = ordered[:n]
        return ReferenceSelection(picked, len(picked), len(picked))
    rows, drawn = [], 0
    for i, row in enumerate(ordered.iter_rows(named=True)):
        drawn = i + 1
        if data.catalog.reasoned(row, review_chars).rating == row["rating"]:
            rows.append(i)
            if len(rows) == n:
                break
    return ReferenceSelection(ordered[rows], drawn, len(rows))


from kit.data.prepare import load_prepared  # noqa: E402  (the documented entry point for prepared data)
