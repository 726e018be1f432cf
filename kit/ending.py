"""What a run says when it ends: a verdict in words, where its files are, what to run next.

`verdict` is a pure function of the run's summary (the before / after evaluations, the
baselines and the paired tests kit.report ran on them), so its wording is tested on given numbers.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from kit.report import ROUND_LABELS

RANDOM_MODELS = ("tiny-random",)


def _valid(m: dict) -> str:
    return f"{m['valid_n']}/{m['n']} valid answers"


def _test(c: dict) -> str:
    return f"difference {c['mae_difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], p={c['p']:.2g}"


HEADS = {"better": "training helped", "worse": "training made the rating error worse",
         "no detectable difference": "no detectable change in the rating error"}


def verdict(summary: dict) -> str:
    """One paragraph, in words, from the paired tests in the summary (kit.report): did training
    help, did GRPO add to priming, how each trained round stands against each baseline tested on
    the same pairs (each with its difference and p-value), and how wide the evaluation's interval is."""
    after = summary.get("eval_after")
    if not after:
        return ("Verdict: no held-out evaluation ran (evaluation.enabled=false), so this run cannot say whether "
                "training helped; evaluate it with the first command below.")
    n = after["n"]
    after_label, primed_label = ROUND_LABELS["eval_after"], ROUND_LABELS["eval_primed"]
    tests = {(c["a"], c["b"]): c for c in summary.get("comparisons", [])}
    start_key = "eval_before" if summary.get("eval_before") else "eval_primed" if summary.get("eval_primed") else None
    parts: list[str] = []
    if start_key:
        start, label = summary[start_key], ROUND_LABELS[start_key]
        c = tests.get((after_label, label))
        head = HEADS[c["outcome"]] if c else "training changed the MAE (no paired test on record)"
        on = f" on {c['n']} pairs" if c and c["n"] != n else ""
        parts.append(f"Verdict: {head}: MAE {start['mae']:.3f} ({label}) -> {after['mae']:.3f} after training"
                     + (f" ({_test(c)}{on})" if c else "") + f"; {_valid(start)} -> {after['valid_n']}/{n}.")
        if start["valid_n"] == 0:
            parts.append(f"None of the {label}'s answers was valid, so its MAE is that of the fallback "
                         "(the user's earlier average).")
        primed = summary.get("eval_primed")
        c2 = tests.get((after_label, primed_label))
        if primed and start_key == "eval_before" and c2:
            parts.append(f"The SFT (priming) stage alone gave {_valid(primed)} and MAE {primed['mae']:.3f}; against it, "
                         f"GRPO: {c2['outcome']} ({_test(c2)}).")
    else:
        parts.append(f"Verdict: after training, MAE {after['mae']:.3f} with {_valid(after)} "
                     "(no evaluation before training to compare with).")
    baselines = summary.get("baselines", {})
    for (a, b), c in tests.items():
        if a != after_label or not b.startswith("baseline: "):
            continue
        name = b.removeprefix("baseline: ")
        mae = baselines.get(name, {}).get("mae")
        line = (f"Against {name} on the same pairs" + (f" (MAE {mae:.3f})" if mae is not None else "")
                + f": after GRPO {c['outcome']} ({_test(c)})")
        sft = tests.get((primed_label, b))
        if sft:
            line += f"; after SFT {sft['outcome']} ({_test(sft)})"
        parts.append(line + ".")
    ci = after.get("mae_ci")
    if ci:
        parts.append(f"With {n} pairs the MAE after training is known to {ci[0]:.2f}-{ci[1]:.2f} (95%); a "
                     "difference the paired test cannot detect needs more pairs, not more reading.")
    return " ".join(parts)


def _python() -> str:
    exe = Path(sys.executable)
    try:
        rel = os.path.relpath(exe.absolute(), Path.cwd())
    except ValueError:
        return "python"
    return rel if not rel.startswith("..") else "python"


def next_test_pairs(eval_split: str, evaluated: int) -> int:
    """How many test pairs to suggest after a run: as many as it evaluated when those were another
    split's (the held-out check), twice as many when they were already test pairs (a tighter interval)."""
    return evaluated if eval_split != "test" else 2 * evaluated


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
