"""Evaluation: generate answers for held-out samples, parse them with the reward
parser, and compute metrics with an explicit fallback for malformed answers."""
from __future__ import annotations

from typing import Any

import polars as pl

from kit.config import KitConfig
from kit.data import TaskData, sample_messages
from kit.metrics import rating_metrics
from kit.prompts import render_chat
from kit.rewards import parse_answer


def predict(loaded: Any, frame: pl.DataFrame, data: TaskData, cfg: KitConfig, desc: str = "evaluating",
            adapter_dir=None) -> list[dict]:
    """One greedy answer per sample, parsed; rows carry truth, prediction and the completion."""
    from kit.model import generate

    rows = list(frame.iter_rows(named=True))
    prompts = [render_chat(loaded.tokenizer, sample_messages(r, data, cfg)) for r in rows]
    completions = generate(loaded, prompts, max_new_tokens=cfg.evaluation.max_new_tokens, temperature=0.0,
                           batch_size=cfg.evaluation.batch_size, seed=cfg.seed, desc=desc, adapter_dir=adapter_dir)
    out = []
    for r, text in zip(rows, completions):
        parsed = parse_answer(text, data.scale, cfg.prompt.style)
        out.append({"user_id": r["user_id"], "item_id": r["item_id"], "rating": float(r["rating"]),
                    "user_avg": float(r["user_avg"]), "prediction": parsed.rating if parsed.valid else None,
                    "valid": parsed.valid, "problems": parsed.problems, "graded_format": parsed.graded,
                    "completion": text})
    return out


def score_predictions(rows: list[dict], scale: tuple[float, float]) -> dict:
    return rating_metrics([r["rating"] for r in rows], [r["prediction"] for r in rows],
                          [r["user_avg"] for r in rows], scale)


def trivial_baselines(frame: pl.DataFrame, train: pl.DataFrame, scale: tuple[float, float]) -> dict[str, dict]:
    """Reference points on the same samples: global mean of training ratings, user's earlier
    average, item's earlier average (all computed from interactions before each target)."""
    truths = frame["rating"].to_list()
    g = float(train["rating"].mean()) if len(train) else (scale[0] + scale[1]) / 2
    fallback = frame["user_avg"].to_list()
    return {
        "global mean": rating_metrics(truths, [g] * len(truths), fallback, scale),
        "user mean": rating_metrics(truths, frame["user_avg"].to_list(), fallback, scale),
        "item mean": rating_metrics(truths, frame["item_avg"].to_list(), fallback, scale),
    }


