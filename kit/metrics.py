"""Rating-prediction metrics that never score a malformed answer with the truth.

A prediction is `None` when the answer was unparsable or invalid. Such answers are
counted in `format_failure_rate` and scored with an explicit fallback (by default the
user's average over earlier interactions, clipped to the scale); metrics over valid
answers only are reported beside.
"""
from __future__ import annotations

import math
from typing import Sequence


def _mae_rmse(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    if not pairs:
        return float("nan"), float("nan")
    errs = [p - t for p, t in pairs]
    return sum(abs(e) for e in errs) / len(errs), math.sqrt(sum(e * e for e in errs) / len(errs))


def rating_metrics(truths: Sequence[float], preds: Sequence[float | None], fallbacks: Sequence[float],
                   scale: tuple[float, float]) -> dict:
    """n, mae, rmse (failures scored with the fallback), valid-only mae/rmse, failure rate,
    exact match and within-one (of the scored predictions), per-true-rating MAE."""
    if not (len(truths) == len(preds) == len(fallbacks)):
        raise ValueError("truths, preds and fallbacks must have the same length")
    n = len(truths)
    lo, hi = scale
    scored, valid_pairs = [], []
    for t, p, f in zip(truths, preds, fallbacks):
        if p is None:
            scored.append((min(hi, max(lo, f)), t))
        else:
            scored.append((p, t))
            valid_pairs.append((p, t))
    mae, rmse = _mae_rmse(scored)
    vmae, vrmse = _mae_rmse(valid_pairs)
    per_rating: dict[str, float] = {}
    for level in sorted({t for t in truths}):
        per_rating[f"{level:g}"] = _mae_rmse([(p, t) for p, t in scored if t == level])[0]
    return {
        "n": n,
        "mae": mae,
        "rmse": rmse,
        "format_failure_rate": (n - len(valid_pairs)) / n if n else float("nan"),
        "valid_n": len(valid_pairs),
        "valid_mae": vmae,
        "valid_rmse": vrmse,
        "exact_match": sum(abs(p - t) < 1e-6 for p, t in scored) / n if n else float("nan"),
        "within_one": sum(abs(p - t) <= 1 + 1e-9 for p, t in scored) / n if n else float("nan"),
        "mae_by_true_rating": per_rating,
    }
