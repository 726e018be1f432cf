"""What a run says when it ends: a verdict in words, where its files are, what to run next.

`verdict` is a pure function of the run's summary (the before / after evaluations, the
baselines), so its wording is tested on given numbers.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

RANDOM_MODELS = ("tiny-random",)


def noise_band(n: int) -> float:
    """The smallest MAE difference that n held-out pairs can tell from noise, roughly: two
    standard errors of a paired difference whose per-pair spread is ~0.4 stars, 2 x 0.4 / sqrt(n)
    (0.2 at 16 pairs, 0.1 at 64). Two evaluations of identically trained adapters on 48 pairs
    already differed by 0.04."""
    return 0.8 / math.sqrt(max(1, n))


def _change(delta: float, band: float) -> str:
    if abs(delta) < 0.0005:
        return "unchanged"
    word = "lower (better)" if delta < 0 else "higher (worse)"
    size = "" if abs(delta) >= band else ", within the noise"
    return f"{abs(delta):.3f} {word}{size}"


def _valid(m: dict) -> str:
    return f"{m['valid_n']}/{m['n']} valid answers"


def verdict(summary: dict) -> str:
    """One paragraph: did training help, by how much, against the baselines, and whether the
    evaluation is large enough to tell."""
    after = summary.get("eval_after")
    if not after:
        return ("Verdict: no held-out evaluation ran (evaluation.enabled=false), so this run cannot say whether "
                "training helped; evaluate it with the first command below.")
    n = after["n"]
    band = noise_band(n)
    start_key = "eval_before" if summary.get("eval_before") else "eval_primed" if summary.get("eval_primed") else None
    parts: list[str] = []
    if start_key:
        start = summary[start_key]
        delta = after["mae"] - start["mae"]
        label = "the base model" if start_key == "eval_before" else "the primed model"
        if delta < -band:
            head = "training helped"
        elif delta > band:
            head = "training made the rating error worse"
        else:
            head = "training did not change the rating error by more than the noise"
        parts.append(f"Verdict: {head}: MAE {start['mae']:.3f} ({label}) -> {after['mae']:.3f} after training, "
                     f"{_change(delta, band)}; {_valid(start)} -> {after['valid_n']}/{n}.")
        if start["valid_n"] == 0:
            parts.append(f"None of {label}'s answers was valid, so its MAE is that of the fallback "
                         "(the user's earlier average).")
        primed = summary.get("eval_primed")
        if primed and start_key == "eval_before":
            parts.append(f"Format priming alone gave {_valid(primed)} and MAE {primed['mae']:.3f}; GRPO then moved "
                         f"MAE {_change(after['mae'] - primed['mae'], band)}.")
    else:
        parts.append(f"Verdict: after training, MAE {after['mae']:.3f} with {_valid(after)} "
                     "(no evaluation before training to compare with).")
    baselines = {k: v for k, v in summary.get("baselines", {}).items() if v.get("mae") is not None}
    if baselines:
        name, best = min(baselines.items(), key=lambda kv: kv[1]["mae"])
        gap = after["mae"] - best["mae"]
        if gap < -band:
            standing = f"beats it by {-gap:.3f}"
        elif gap > band:
            standing = f"is worse by {gap:.3f}"
        else:
            standing = f"is level with it ({gap:+.3f}, within the noise)"
        parts.append(f"The best classical baseline on the same pairs, {name}, has MAE {best['mae']:.3f}: "
                     f"the trained model {standing}.")
    parts.append(f"With {n} pairs a difference under ~{band:.2f} MAE is not conclusive; evaluate on more pairs "
                 "before trusting a small change.")
    return " ".join(parts)


def _python() -> str:
    exe = Path(sys.executable)
    try:
        rel = os.path.relpath(exe.absolute(), Path.cwd())
    except ValueError:
        return "python"
    return rel if not rel.startswith("..") else "python"


def next_steps(out: Path, on_gpu: bool, seconds_per_pair: float | None = None, pairs: int = 48) -> list[str]:
    """Where the run is and the next commands (evaluate on more pairs, open the app, the adapter)."""
    from kit.progress import format_duration

    py = _python()
    limit = "" if on_gpu else f" --limit {pairs}"
    how_long = f" (~ {format_duration(seconds_per_pair * pairs)} here)" if seconds_per_pair and not on_gpu else ""
    return [f"kit: run folder: {out}  (summary.json, plan.json, metrics.jsonl, train.log, adapter/)",
            "kit: next:",
            f"  {py} -m kit.evaluate --run {out} --split test{limit}   # held-out test pairs, with baselines{how_long}",
            f"  {py} -m kit.app --run {out}   # read its answers, tuned beside base",
            f"  the trained LoRA adapter: {out / 'adapter'}  (loads with peft on the same base model)"]


def install_ok_line(model_name: str) -> str | None:
    """For a run on a random model (the smoke recipe): the install works, the answers mean nothing."""
    if model_name not in RANDOM_MODELS:
        return None
    return (f"kit: install OK: data, model, priming, GRPO, evaluation and the adapter save all ran. The answers "
            f"are gibberish because '{model_name}' is a random untrained model; `make demo` trains a real one.")
