"""One path for every table of results, so training, `kit.evaluate`, its `compare` command and
the app show the same figures the same way.

- `reference_rows`: the classical baselines and (synthetic data) the noise floor on exactly the
  pairs a model was scored on, with their per-pair predictions kept for paired tests.
- `with_intervals`: a seeded 95% bootstrap interval over pairs for MAE and RMSE. At 16 pairs an
  MAE is known to about +-0.2 stars; a table without that width invites reading noise.
- `compare`: a paired test of two predictors on the same pairs (sign-flip permutation test of
  the mean difference in absolute error, through scipy, plus a bootstrap interval of that
  difference), stated as "better", "worse" or "no detectable difference (p=...)".
- `metrics_table` / `summary_table`: the two table shapes (full, and the training summary's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kit.metrics import rating_metrics

LEVEL = 0.95
BOOTSTRAP_ROUNDS = 2000
PERMUTATIONS = 9999
SIGNIFICANCE = 0.05
ROUND_LABELS = {"eval_before": "base model", "eval_primed": "after SFT", "eval_after": "after GRPO"}
METRIC_KEYS = ("n", "mae", "rmse", "mae_ci", "rmse_ci", "format_failure_rate", "exact_match", "within_one",
               "valid_mae", "valid_rmse")


# --------------------------------------------------------------------------- per-pair figures

def scored_predictions(records: Sequence[dict], scale: tuple[float, float]) -> list[float]:
    """The prediction each pair is scored with: the model's rating, or for a malformed answer the
    user's earlier average clipped to the scale (never the truth), as `rating_metrics` scores it."""
    lo, hi = scale
    return [float(r["prediction"]) if r["prediction"] is not None else min(hi, max(lo, float(r["user_avg"])))
            for r in records]


def abs_errors(truths: Sequence[float], preds: Sequence[float]) -> np.ndarray:
    return np.abs(np.asarray(preds, dtype=float) - np.asarray(truths, dtype=float))


def pair_errors(records: Sequence[dict], scale: tuple[float, float]) -> dict[tuple, float]:
    """Each answered pair's absolute error, keyed by (user_id, item_id): what paired tests between
    rounds scored on different pair sets line up on."""
    found = abs_errors([r["rating"] for r in records], scored_predictions(records, scale))
    return {(r["user_id"], r["item_id"]): float(e) for r, e in zip(records, found)}


def _resampled(values: np.ndarray, seed: int, rounds: int = BOOTSTRAP_ROUNDS) -> np.ndarray:
    """`rounds` resamples of the pairs' values, with replacement (seeded): one per row."""
    return values[np.random.default_rng(seed).integers(0, values.size, size=(rounds, values.size))]


def _percentiles(stat: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2 * 100
    return [float(x) for x in np.percentile(stat, [tail, 100 - tail])]


def bootstrap_interval(errors: Sequence[float], seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS,
                       level: float = LEVEL) -> dict[str, list[float]]:
    """Percentile intervals of MAE and RMSE over pairs resampled with replacement (seeded)."""
    e = np.abs(np.asarray(errors, dtype=float))
    if e.size == 0:
        return {"mae_ci": [math.nan, math.nan], "rmse_ci": [math.nan, math.nan]}
    resampled = _resampled(e, seed, rounds)
    return {"mae_ci": _percentiles(resampled.mean(axis=1), level),
            "rmse_ci": _percentiles(np.sqrt((resampled ** 2).mean(axis=1)), level)}


def with_intervals(metrics: dict, truths: Sequence[float], scored: Sequence[float], seed: int = 0) -> dict:
    """`metrics` plus `mae_ci` / `rmse_ci` (95%, bootstrap over pairs, seeded)."""
    return {**metrics, **bootstrap_interval(abs_errors(truths, scored), seed)}


def score_records(records: Sequence[dict], scale: tuple[float, float], seed: int = 0) -> dict:
    """`rating_metrics` of a model's answers, with intervals."""
    truths = [float(r["rating"]) for r in records]
    metrics = rating_metrics(truths, [r["prediction"] for r in records], [r["user_avg"] for r in records], scale)
    return with_intervals(metrics, truths, scored_predictions(records, scale), seed)


# --------------------------------------------------------------------------- paired comparison

@dataclass(frozen=True)
class Comparison:
    """A against B on the same pairs; `delta` = MAE(A) - MAE(B), negative when A is better."""

    a: str
    b: str
    n: int
    delta: float
    ci: tuple[float, float]
    p: float

    @property
    def outcome(self) -> str:
        if self.p < SIGNIFICANCE and self.delta < 0:
            return "better"
        if self.p < SIGNIFICANCE and self.delta > 0:
            return "worse"
        return "no detectable difference"

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "n": self.n, "mae_difference": self.delta, "ci": list(self.ci),
                "p": self.p, "outcome": self.outcome}


def compare(name_a: str, errors_a: Sequence[float], name_b: str, errors_b: Sequence[float],
            seed: int = 0) -> Comparison:
    """Paired test of two predictors' absolute errors on the same pairs, in the same order: the
    p-value of a sign-flip permutation test of the mean difference (exact up to 13 pairs), and a
    seeded bootstrap interval of MAE(A) - MAE(B)."""
    from scipy.stats import permutation_test

    a = np.abs(np.asarray(errors_a, dtype=float))
    b = np.abs(np.asarray(errors_b, dtype=float))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired comparison of {name_a} and {name_b} needs the same non-empty pairs "
                         f"({a.size} vs {b.size} errors)")
    d = a - b
    delta = float(d.mean())
    if np.allclose(d, 0):
        return Comparison(name_a, name_b, int(d.size), delta, (0.0, 0.0), 1.0)
    test = permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                            vectorized=True, n_resamples=PERMUTATIONS, alternative="two-sided",
                            random_state=np.random.default_rng(seed))
    lo, hi = _percentiles(_resampled(d, seed).mean(axis=1))
    return Comparison(name_a, name_b, int(d.size), delta, (lo, hi), float(min(1.0, test.pvalue)))


# --------------------------------------------------------------------------- calibration

def calibration(records: Sequence[dict], bins: int = 10) -> dict | None:
    """How far the rating distributions can be taken at their word: every (pair, rating) gives a
    predicted probability and whether that rating was the truth; grouped into equal-width bins of
    probability. `ece` (expected calibration error) is the pair-weighted mean gap between a bin's
    mean probability and its observed frequency; `p_true` the mean probability given to the true
    rating. None when no record has a distribution."""
    probs, hits, p_true = [], [], []
    for r in records:
        dist = r.get("rating_probs")
        if not dist:
            continue
        truth = float(r["rating"])
        for rating, p in dist.items():
            probs.append(float(p))
            hits.append(float(float(rating) == truth))
        p_true.append(float(dist.get(f"{truth:g}", 0.0)))
    if not probs:
        return None
    p, h = np.asarray(probs), np.asarray(hits)
    which = np.minimum((p * bins).astype(int), bins - 1)
    table, gap = [], 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        mean_p, freq = float(p[sel].mean()), float(h[sel].mean())
        table.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(sel.sum()), "mean_p": mean_p, "freq": freq})
        gap += sel.sum() / p.size * abs(mean_p - freq)
    return {"pairs": len(p_true), "bins": table, "ece": float(gap), "p_true": float(np.mean(p_true))}


# --------------------------------------------------------------------------- reference rows

@dataclass
class References:
    """Baselines and the noise floor on one set of pairs."""

    metrics: dict[str, dict]  # baseline name -> metrics with intervals
    errors: dict[str, np.ndarray]  # baseline name -> absolute error per pair (the pairs' order)
    noise_floor: dict | None  # synthetic data only: the oracle that knows mu (an expectation, no interval)


def reference_rows(data: Any, frame: Any, seed: int = 0, fitted: bool = True) -> References:
    """The classical baselines (fitted on the training interactions; `fitted=False`: the averages
    only, instant at any scale) and the synthetic noise floor, on the pairs of `frame`."""
    from kit.baselines import baseline_predictions

    truths = [float(x) for x in frame["rating"].to_list()]
    fallbacks = frame["user_avg"].to_list()
    metrics, errors = {}, {}
    for name, preds in baseline_predictions(data.training_interactions(), frame, data.scale, seed, fitted).items():
        m = rating_metrics(truths, preds, fallbacks, data.scale)
        errors[name] = abs_errors(truths, preds)
        metrics[name] = with_intervals(m, truths, preds, seed)
    floor = None
    if getattr(data, "catalog", None) is not None:
        from kit.data.synthetic import noise_floor

        floor = noise_floor([data.catalog.expected(u, i) for u, i in zip(frame["user_id"], frame["item_id"])],
                            data.catalog.noise, data.scale)
    return References(metrics, errors, floor)


def best_baseline(refs: References) -> str | None:
    usable = {k: v for k, v in refs.metrics.items() if v.get("mae") is not None and not math.isnan(v["mae"])}
    return min(usable, key=lambda k: usable[k]["mae"]) if usable else None


def public_metrics(m: dict) -> dict:
    """The figures a metrics.json keeps for a reference row."""
    return {k: m[k] for k in METRIC_KEYS if k in m}


# --------------------------------------------------------------------------- tables

def _num(x: Any, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def with_ci(m: dict, key: str, digits: int = 3) -> str:
    """'0.812 [0.62, 1.01]' (the interval when the row has one)."""
    value = _num(m.get(key), digits)
    ci = m.get(f"{key}_ci")
    if value == "-" or not ci or any(c is None or math.isnan(c) for c in ci):
        return value
    return f"{value} [{ci[0]:.2f}, {ci[1]:.2f}]"


def metrics_table(rows: dict[str, dict]) -> str:
    """The full table (kit.evaluate, compare, report.md): one row per model or baseline."""
    lines = ["| model | n | MAE [95% CI] | RMSE [95% CI] | format failures | MAE (valid) | RMSE (valid) | exact | "
             "within 1 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m.get('n', '-')} | {with_ci(m, 'mae', 4)} | {with_ci(m, 'rmse', 4)} | "
                     f"{_num(m.get('format_failure_rate'), 4)} | {_num(m.get('valid_mae'), 4)} | "
                     f"{_num(m.get('valid_rmse'), 4)} | {_num(m.get('exact_match'), 4)} | "
                     f"{_num(m.get('within_one'), 4)} |")
    return "\n".join(lines)


def grounded_cell(g: dict | None) -> str:
    """'41/52 (79%)': claims found in the prompt, of all claims (kit.grounding)."""
    if not g or not g.get("claims"):
        return "-"
    return f"{g['supported']}/{g['claims']} ({g['share']:.0%})"


def consistency_cell(c: dict | None) -> str:
    """'58/64 (91%)': answers whose rating follows from their own match, of those that state one."""
    if not c or not c.get("judged"):
        return "-"
    return f"{c['consistent']}/{c['judged']} ({c['share']:.0%})"


def summary_table(models: dict[str, dict], baselines: dict[str, dict], floor: dict | None) -> str:
    """The training summary's table: the before / after rows, the baselines on the same pairs and
    the noise floor."""
    lines = ["| model | valid answers | MAE [95% CI] | RMSE [95% CI] | MAE (valid only) | grounded claims | "
             "rate follows match |", "|---|---|---|---|---|---|---|"]
    for label, m in models.items():
        lines.append(f"| {label} | {m['valid_n']}/{m['n']} | {with_ci(m, 'mae')} | {with_ci(m, 'rmse')} | "
                     f"{_num(m.get('valid_mae'), 3)} | {grounded_cell(m.get('grounding'))} | "
                     f"{consistency_cell(m.get('consistency'))} |")
    for name, m in baselines.items():
        lines.append(f"| baseline: {name} | - | {with_ci(m, 'mae')} | {with_ci(m, 'rmse')} | - | - | - |")
    if floor:
        lines.append(f"| oracle (noise floor) | - | {_num(floor['mae'], 3)} | {_num(floor['rmse'], 3)} | - | - | - |")
    lines.append("Malformed answers are scored with the user's earlier average (never with the truth); "
                 "intervals: 95% bootstrap over pairs.")
    return "\n".join(lines)


def decoding_line(label: str, m: dict) -> str | None:
    """One line: greedy against expected-rating decoding of the same answers (None when only one
    of them was computed)."""
    decodes, c = m.get("decodes"), m.get("decode_comparison")
    if not decodes or not c:
        return None
    return (f"{label}, same answers: greedy MAE {with_ci(decodes['greedy'], 'mae')}, expected rating MAE "
            f"{with_ci(decodes['expected'], 'mae')}: {c['outcome']} (p={c['p']:.2g})")


def comparison_line(c: dict) -> str:
    """One paired comparison (as `Comparison.as_dict` stores it), e.g. 'after GRPO vs item mean:
    **worse**, MAE +0.210 [+0.050, +0.370], p=0.012 (64 pairs)'."""
    return (f"{c['a']} vs {c['b']}: **{c['outcome']}**, MAE {c['mae_difference']:+.3f} "
            f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], p={c['p']:.3g} ({c['n']} pairs)")


def comparisons_block(comparisons: Sequence[dict]) -> str:
    """Markdown list of paired comparisons."""
    return "\n".join(f"- {comparison_line(c)}" for c in comparisons)
