"""`python -m kit.evaluate`: the paper's numbers (MAE, RMSE) for a model, next to classical
baselines on the identical split, with plots of where the model is wrong.

    python -m kit.evaluate --run RUN_DIR [--split test] [--limit N] [--answers N --temperature T]
    python -m kit.evaluate --run RUN_DIR --adapter none          # the untrained base model
    python -m kit.evaluate --config cpu-demo --baselines-only    # the classical table alone
    python -m kit.evaluate --baselines-only --data PREPARED_DIR  # ... on a prepared real data set
    python -m kit.evaluate compare RUN_A RUN_B ... [--labels a b ...] [--out DIR]

Malformed answers are never scored with the truth: they count in `format_failure_rate`
and are scored with the user's earlier average (clipped to the scale); metrics over valid
answers only are reported beside. Predictions are appended as they come, so an
interrupted evaluation continues where it stopped. Each figure carries a 95% bootstrap
interval, and the model is compared with each baseline by a paired test on the same pairs
(kit.report). Greedy answers also get their rating distribution after the rating tag: the
expected rating and a calibration plot beside the greedy rating (kit.decoding).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import polars as pl

from kit.config import ConfigError, KitConfig, config_for_run
from kit.data import FittedPrompt, TaskData, fit_prompt
from kit.grounding import grounding_summary
from kit.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from kit.report import (abs_errors, calibration, compare, comparison_line, comparisons_block, metrics_table,
                        public_metrics, reference_rows, score_records, scored_predictions, with_ci)
from kit.rewards import STYLES, is_consistent, parse_answer



# --------------------------------------------------------------------------- predictions

def _key(row: dict) -> str:
    return f"{row['user_id']}\t{row['item_id']}"


def ratings_of_answers(completions: list[str], scale: tuple[float, float], style: str) -> dict:
    """Ratings of n answers (None when malformed), the mean of the valid ones (None when none is
    valid), their spread (population std), and the first answer's parse."""
    parsed = [parse_answer(c, scale, style) for c in completions]
    ratings = [p.rating if p.valid else None for p in parsed]
    ok = [r for r in ratings if r is not None]
    return {"ratings": ratings, "mean": sum(ok) / len(ok) if ok else None,
            "spread": statistics.pstdev(ok) if len(ok) > 1 else 0.0, "n_valid": len(ok), "first": parsed[0]}


def parse_completions(row: dict, completions: list[str], data: TaskData, style: str) -> dict:
    """One record per pair: the mean of the valid sampled ratings (None when none is valid)."""
    s = ratings_of_answers(completions, data.scale, style)
    record = {
        "user_id": row["user_id"], "item_id": row["item_id"], "rating": float(row["rating"]),
        "user_avg": float(row["user_avg"]), "item_avg": float(row["item_avg"]),
        "prediction": s["mean"], "valid": s["n_valid"] > 0, "problems": s["first"].problems,
        "graded_format": s["first"].graded, "consistent": is_consistent(s["first"], data.scale),
        "completion": completions[0],
    }
    if len(completions) > 1:
        record.update(answer_ratings=s["ratings"], n_valid=s["n_valid"], spread=s["spread"], completions=completions)
    return record


def prompt_budget(cfg: KitConfig) -> int:
    """Prompt tokens that leave room for the whole answer within model.max_seq_length."""
    return cfg.model.max_seq_length - cfg.evaluation.max_new_tokens


def answer_end(style: str) -> str:
    """The closing tag after which an answer in this prompt style is complete (`</rate>`)."""
    return f"</{STYLES[style][-1]}>"


def _answers(loaded: Any, fitted: list[FittedPrompt], cfg: KitConfig, n_answers: int, temperature: float,
             seed: int) -> list[list[str]]:
    """n answers per fitted prompt, each stopped once it has written its closing rating tag. A
    prompt that cannot fit is not sent: its answers are empty, so it counts as malformed
    (scored with the fallback, never with the truth) and as too long."""
    from kit.model import generate

    ready = [f.text for f in fitted if f.text is not None]
    texts = iter(generate(loaded, ready, max_new_tokens=cfg.evaluation.max_new_tokens, temperature=temperature,
                          batch_size=cfg.evaluation.batch_size, seed=seed, progress=False, n=n_answers,
                          stop=(answer_end(cfg.prompt.style),))
                 if ready else [])
    return [[next(texts) for _ in range(n_answers)] if f.text is not None else [""] * n_answers for f in fitted]


def answer_rows(loaded: Any, rows: list[dict], data: TaskData, cfg: KitConfig, n_answers: int = 1,
                temperature: float = 0.0, seed: int = 0) -> list[tuple[list[str], FittedPrompt]]:
    """n answers per row, its prompt fitted to the budget first (oldest history left out)."""
    fitted = [fit_prompt(r, data, cfg, loaded.tokenizer, prompt_budget(cfg)) for r in rows]
    return list(zip(_answers(loaded, fitted, cfg, n_answers, temperature, seed), fitted))


def fit_fields(fitted: FittedPrompt) -> dict:
    """What a prediction record says about its prompt's length (nothing when it fitted whole)."""
    if fitted.text is None:
        return {"prompt_too_long": fitted.tokens}
    return {"history_dropped": fitted.dropped} if fitted.dropped else {}


PAIRS_PER_WINDOW = 4  # batches sorted together by prompt length


def predict(loaded: Any, frame: pl.DataFrame, data: TaskData, cfg: KitConfig, desc: str = "evaluating",
            n_answers: int = 1, temperature: float = 0.0, sink: Path | None = None,
            known: dict[str, dict] | None = None, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Answers for every sample in `frame` (greedy, or n sampled answers per pair), parsed.

    With a `sink`, records are appended to it batch by batch and pairs already there are
    skipped: an interrupted evaluation resumes where it stopped. `known` holds records made
    earlier with the same model and settings (keyed by user and item); they are reused too.
    Pairs go out in frame order, a window of a few batches at a time; inside a window the
    longest prompts go first (less padding), so a stopped run has finished whole windows from
    the front and a smaller --limit reuses them. Records come back in frame order.
    `progress(n)` is called after each batch with the pairs done so far (a console bar by default)."""
    if n_answers > 1 and temperature <= 0:
        raise ValueError("sampling n answers per pair needs a temperature > 0 (e.g. --temperature 0.7)")
    if n_answers == 1 and cfg.evaluation.decode == "mean_of_n":
        raise ConfigError("evaluation.decode=mean_of_n needs several sampled answers per pair: "
                          "python -m kit.evaluate --answers N --temperature T (training's rounds answer once: "
                          "use decode=greedy or expected there)")
    done = dict(known or {})
    if sink:
        done.update({_key(r): r for r in read_jsonl(sink)})
    rows = [r for r in frame.iter_rows(named=True)]
    todo = [r for r in rows if _key(r) not in done]
    batch = max(1, cfg.evaluation.batch_size // n_answers)
    window = batch * PAIRS_PER_WINDOW
    bar = None
    if progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc=desc, unit="pair")
    finished = len(rows) - len(todo)
    for wstart in range(0, len(todo), window):
        pending = todo[wstart:wstart + window]
        fitted = [fit_prompt(r, data, cfg, loaded.tokenizer, prompt_budget(cfg)) for r in pending]
        order = sorted(range(len(pending)), key=lambda k: -fitted[k].tokens)
        for bstart in range(0, len(order), batch):
            picked = order[bstart:bstart + batch]
            answers = _answers(loaded, [fitted[k] for k in picked], cfg, n_answers, temperature,
                               seed=cfg.seed + wstart + bstart)
            dists: list[dict | None] = [None] * len(picked)
            if n_answers == 1 and cfg.evaluation.rating_distribution:
                dists = rating_distributions(loaded, [fitted[k] for k in picked], [a[0] for a in answers], data, cfg)
            for k, completions, dist in zip(picked, answers, dists):
                r = pending[k]
                record = {**parse_completions(r, completions, data, cfg.prompt.style), **fit_fields(fitted[k])}
                record = with_decoding(record, dist, cfg.evaluation.decode if n_answers == 1 else "mean_of_n")
                if fitted[k].text is not None:
                    record["grounding"] = grounding_summary(completions[0], fitted[k].text, cfg.prompt.style)
                done[_key(r)] = record
                if sink:
                    append_jsonl(sink, record)
            finished += len(picked)
            if bar is not None:
                bar.update(len(picked))
            else:
                progress(finished)
    if bar is not None:
        bar.close()
    return [done[_key(r)] for r in rows]


def rating_distributions(loaded: Any, fitted: list[FittedPrompt], answers: list[str], data: TaskData,
                         cfg: KitConfig) -> list[dict | None]:
    """Each greedy answer's rating distribution after its rating tag (kit.decoding). Declined for
    this tokenizer and scale: None for all, and an error when the recipe asked to decode with it."""
    from kit.decoding import expected_ratings

    dists, declined = expected_ratings(loaded, [f.text for f in fitted], answers, data.scale, cfg.prompt.style,
                                       cfg.evaluation.batch_size)
    if declined and cfg.evaluation.decode == "expected":
        raise ConfigError(f"evaluation.decode=expected is not possible here: {declined}; use decode=greedy")
    return dists


def with_decoding(record: dict, dist: dict | None, decode: str) -> dict:
    """The record with its greedy rating, its rating distribution and expected rating (when read),
    and `prediction` set by the decoding the recipe chose. A malformed answer has no expected
    rating: it stays malformed (scored with the fallback, never with the truth)."""
    if decode == "mean_of_n":
        return record
    record = {**record, "greedy_rating": record["prediction"]}
    if dist is not None:
        record.update(rating_probs=dist["probs"], rating_mass=dist["mass"],
                      expected_rating=dist["expected"] if record["valid"] else None)
    if decode == "expected":
        record["prediction"] = record.get("expected_rating")
    return record


DECODES = {"greedy": "greedy_rating", "expected": "expected_rating"}


def _decoded(records: list[dict], name: str) -> list[dict]:
    """The records as that decoding predicts them (no value: malformed, scored with the fallback)."""
    return [{**r, "prediction": r.get(DECODES[name])} for r in records]


def decode_metrics(records: list[dict], scale: tuple[float, float], seed: int = 0) -> dict:
    """MAE / RMSE (with intervals) of each decoding the records hold, on the same pairs."""
    out = {}
    for name, field in DECODES.items():
        if any(field in r for r in records):
            m = score_records(_decoded(records, name), scale, seed)
            out[name] = {k: m[k] for k in ("mae", "rmse", "mae_ci", "rmse_ci", "valid_n", "n")}
    return out


def grounding_totals(records: list[dict]) -> dict | None:
    """Claims found in the prompt over all claims of all (first) answers (kit.grounding)."""
    marked = [r["grounding"] for r in records if "grounding" in r]
    if not marked:
        return None
    claims = sum(g["claims"] for g in marked)
    supported = sum(g["supported"] for g in marked)
    return {"share": supported / claims if claims else None, "supported": supported, "claims": claims,
            "answers_with_claims": sum(1 for g in marked if g["claims"]), "answers": len(marked)}


def consistency_totals(records: list[dict]) -> dict | None:
    """Answers whose rating follows from their own `<match>` (kit.rewards.is_consistent), of the
    valid answers whose match states a number; None when no record says."""
    judged = [r["consistent"] for r in records if r.get("consistent") is not None]
    if not judged:
        return None
    return {"share": sum(judged) / len(judged), "consistent": sum(judged), "judged": len(judged),
            "answers": len(records)}


def score_predictions(records: list[dict], scale: tuple[float, float], seed: int = 0) -> dict:
    """Rating metrics with their intervals (kit.report), plus how many prompts were trimmed to fit
    and how many could not fit."""
    metrics = score_records(records, scale, seed)
    decodes = decode_metrics(records, scale, seed)
    if len(decodes) > 1:
        metrics["decodes"] = decodes
        truths = [r["rating"] for r in records]
        errors = {name: abs_errors(truths, scored_predictions(_decoded(records, name), scale)) for name in decodes}
        metrics["decode_comparison"] = compare("expected rating", errors["expected"], "greedy rating",
                                               errors["greedy"], seed).as_dict()
        metrics["calibration"] = calibration(records)
    grounded = grounding_totals(records)
    if grounded:
        metrics["grounding"] = grounded
    agreed = consistency_totals(records)
    if agreed:
        metrics["consistency"] = agreed
    metrics["prompts_trimmed"] = sum(1 for r in records if r.get("history_dropped"))
    metrics["prompts_too_long"] = sum(1 for r in records if r.get("prompt_too_long") is not None)
    return metrics


def length_note(metrics: dict, cfg: KitConfig) -> str | None:
    """One line on prompts over the budget, or None when every prompt fitted whole."""
    if not (metrics.get("prompts_trimmed") or metrics.get("prompts_too_long")):
        return None
    return (f"{metrics['prompts_trimmed']} prompts had their oldest history entries left out to fit "
            f"{prompt_budget(cfg)} tokens (model.max_seq_length - evaluation.max_new_tokens); "
            f"{metrics['prompts_too_long']} could not fit at all and count as malformed")


# --------------------------------------------------------------------------- report

def write_report(out: Path, title: str, model_metrics: dict, baselines: dict[str, dict], records: list[dict],
                 scale: tuple[float, float], run_dir: Path | None, extra: dict | None = None) -> Path:
    from kit.plots import confusion_plot, distribution_plot, reliability_plot, reward_curves

    truths = [r["rating"] for r in records]
    preds = [r["prediction"] for r in records]
    confusion_plot(truths, preds, scale, out / "confusion.png")
    distribution_plot(truths, preds, scale, out / "distribution.png")
    has_curves = bool(run_dir) and reward_curves(read_jsonl(run_dir / "metrics.jsonl"), out / "rewards.png")
    per_rating = " | ".join(f"{k}: {'-' if math.isnan(v) else f'{v:.4f}'}"
                            for k, v in model_metrics["mae_by_true_rating"].items())
    parts = [f"# {title}", "", metrics_table({"this model": model_metrics, **baselines}), "",
             f"MAE by true rating: {per_rating}", "",
             "Malformed answers are scored with the user's average over earlier interactions (clipped to the "
             f"scale {scale[0]:g}-{scale[1]:g}), never with the truth; 'valid' columns use valid answers only.",
             "Baselines are fitted on the training interactions and scored on the same pairs. Intervals: 95% "
             "bootstrap over pairs (seeded)."]
    decodes = model_metrics.get("decodes")
    if decodes:
        c = model_metrics["decode_comparison"]
        parts += ["", "Decoding (same answers, same pairs): " + "; ".join(
            f"{name} MAE {with_ci(m, 'mae')}, RMSE {with_ci(m, 'rmse')}" for name, m in decodes.items()),
            f"Paired: {comparison_line(c)}. The prediction above is the recipe's `evaluation.decode`."]
    grounded = model_metrics.get("grounding")
    if grounded and grounded["claims"]:
        parts += ["", f"Grounded reasons: {grounded['supported']} of {grounded['claims']} claimed aspects and preferences "
                      f"({grounded['share']:.0%}) occur in the prompt the model was shown ({grounded['answers_with_claims']} "
                      f"of {grounded['answers']} answers make any claim; rule: kit/grounding.py)."]
    calib = model_metrics.get("calibration")
    if calib:
        reliability_plot(calib, model_metrics["mae_by_true_rating"], out / "calibration.png")
        parts += ["", f"Calibration of the rating distributions: ECE {calib['ece']:.3f}, mean probability of the "
                      f"true rating {calib['p_true']:.2f} ({calib['pairs']} pairs).", "",
                  "![calibration](calibration.png)"]
    if model_metrics.get("comparisons"):
        parts += ["", "Paired tests on the same pairs (sign-flip permutation test of the MAE difference; "
                      "the interval is a bootstrap of that difference):", "",
                  comparisons_block(model_metrics["comparisons"])]
    for key, value in (extra or {}).items():
        parts += ["", f"{key}: {value}"]
    parts += ["", "![confusion](confusion.png)", "", "![distribution](distribution.png)"]
    if has_curves:
        parts += ["", "![training rewards](rewards.png)"]
    atomic_write_text(out / "report.md", "\n".join(parts) + "\n")
    return out / "report.md"


def write_baselines_report(out: Path, split: str, n_pairs: int, baselines: dict[str, dict],
                           floor: dict | None, note: str) -> None:
    """--baselines-only --out DIR: the classical table as metrics.json and report.md (no LLM)."""
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"split": split, "n": n_pairs,
                               "baselines": {k: public_metrics(v) for k, v in baselines.items()}}
    if floor:
        metrics["noise_floor"] = floor
    atomic_write_json(out / "metrics.json", metrics)
    parts = [f"# Baselines on {split} ({n_pairs} pairs)", "", metrics_table(baselines), "",
             "Baselines are fitted on the training interactions and scored on these pairs."]
    if note:
        parts += ["", note]
    atomic_write_text(out / "report.md", "\n".join(parts) + "\n")


def model_comparisons(name: str, records: list[dict], scale: tuple[float, float], baseline_errors: dict,
                      seed: int = 0) -> list[dict]:
    """The model against each baseline, paired on the same pairs."""
    errors = abs_errors([r["rating"] for r in records], scored_predictions(records, scale))
    return [compare(name, errors, base, errs, seed).as_dict() for base, errs in baseline_errors.items()]


# --------------------------------------------------------------------------- entry points

def _settings(args: argparse.Namespace, cfg: KitConfig, adapter: str | None, dtype: str,
              scale: tuple[float, float]) -> dict:
    """What changes an answer to a pair (kit.stage_cache.eval_settings). --limit is not in it:
    a larger limit adds pairs, a smaller one reads a subset, and finished answers are reused."""
    from kit.stage_cache import eval_settings

    return {**eval_settings(cfg, dtype, adapter, args.split, scale, answers=args.answers,
                            temperature=args.temperature), "adapter_path": adapter}


def _config_for(args: argparse.Namespace) -> tuple[KitConfig, Path | None]:
    overrides = list(args.overrides or [])
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.max_new_tokens:
        overrides.append(f"evaluation.max_new_tokens={args.max_new_tokens}")
    if not (args.run or args.config or args.data):
        raise ConfigError("say what to evaluate on: --data PREPARED_DIR, --config RECIPE or --run RUN_DIR")
    if args.data and not (args.run or args.config):
        if args.baselines_only:  # the data is all the baselines need: the kit's defaults, no recipe
            return config_for_run(None, None, overrides, args.data, default_recipe=None, use_defaults=True)
        print("kit: --data without --config: model and evaluation settings from templates/recipes/cpu-demo.yaml",
              file=sys.stderr)
    return config_for_run(args.run, args.config, overrides, args.data,
                          default_recipe="cpu-demo" if args.data else None)


def chosen_adapter(flag: str | None, run_dir: Path | None) -> str | None:
    """The adapter that answers: --adapter DIR, --adapter none (the base model), else the run's."""
    if flag:
        return None if flag.lower() == "none" else flag
    return str(run_dir / "adapter") if run_dir and (run_dir / "adapter").is_dir() else None


def evaluate_main(args: argparse.Namespace) -> int:
    from kit.data import load_task_data

    cfg, run_dir = _config_for(args)
    data = load_task_data(cfg)
    frame = data.split(args.split, args.limit, seed=cfg.seed, seeded_order=True)  # a stop leaves a prefix
    scale = data.scale
    refs = reference_rows(data, frame, cfg.seed, fitted=not args.no_baselines)
    baselines = {} if args.no_baselines else refs.metrics
    floor = refs.noise_floor
    if args.baselines_only:
        table = metrics_table(baselines)
        note = (f"noise floor of the synthetic data (oracle knowing mu): MAE {floor['mae']:.4f}, "
                f"RMSE {floor['rmse']:.4f}") if floor else ""
        print(table + (f"\n\n{note}" if note else ""))
        if args.out:
            write_baselines_report(Path(args.out), args.split, len(frame), baselines, floor, note)
            print(f"\nkit: wrote {Path(args.out) / 'report.md'} and metrics.json")
        return 0

    adapter = chosen_adapter(args.adapter, run_dir)
    tag = args.split + ("" if adapter or not run_dir else "-base")
    out = Path(args.out) if args.out else (run_dir / "eval" / tag if run_dir else None)
    if out is None:
        raise ConfigError("--out DIR is needed when no --run is given")
    out.mkdir(parents=True, exist_ok=True)

    from kit.backend import select_backend

    select_backend(cfg.backend)  # the run's stack (unsloth first when it is the backend)
    from kit.model import load_adapter
    from kit.stage_cache import describe, differences, model_dtype

    loaded = load_adapter(cfg.model, adapter, device=cfg.device)
    settings = _settings(args, cfg, adapter, model_dtype(loaded.model, cfg.model.dtype), scale)
    settings_path = out / "settings.json"
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        if saved != json.loads(json.dumps(settings)):
            raise ConfigError(f"{out} holds predictions made with other settings "
                              f"({describe(differences(saved, settings))}): "
                              "delete that folder or pass --out NEW_DIR")
    atomic_write_json(settings_path, settings)
    wanted = {_key(r) for r in frame.iter_rows(named=True)}
    finished = len(wanted & {_key(r) for r in read_jsonl(out / "predictions.jsonl")})
    if finished:
        print(f"kit: reusing {finished} of {len(frame)} predictions already in {out / 'predictions.jsonl'}")
    records = predict(loaded, frame, data, cfg, desc=f"evaluating {args.split}", n_answers=args.answers,
                      temperature=args.temperature, sink=out / "predictions.jsonl")
    metrics = score_predictions(records, scale, cfg.seed)
    if not args.no_baselines:
        metrics["comparisons"] = model_comparisons("this model", records, scale, refs.errors, cfg.seed)
    if args.answers > 1:
        spreads = [r["spread"] for r in records if r.get("n_valid", 0) > 1]
        metrics["mean_sample_spread"] = sum(spreads) / len(spreads) if spreads else float("nan")
    metrics["baselines"] = {k: public_metrics(v) for k, v in baselines.items()}
    if floor:
        metrics["noise_floor"] = floor
    atomic_write_json(out / "metrics.json", metrics)
    extra = {"model": cfg.model.name, "adapter": adapter or "none (base model)"}
    if floor:
        extra["noise floor (oracle knowing the synthetic mu)"] = f"MAE {floor['mae']:.4f}, RMSE {floor['rmse']:.4f}"
    note = length_note(metrics, cfg)
    if note:
        extra["prompt length"] = note
        print(f"kit: note: {note}", file=sys.stderr)
    report = write_report(out, f"Evaluation on {args.split} ({len(records)} pairs)", metrics, baselines, records,
                          scale, run_dir, extra)
    print(metrics_table({"this model": metrics, **baselines}))
    if metrics.get("comparisons"):
        print("\n" + comparisons_block(metrics["comparisons"]).replace("**", ""))
    print(f"\nkit: wrote {report} and plots in {out}")
    return 0


def run_comparisons(labels: list[str], prediction_files: list[Path], scale: tuple[float, float] | None,
                    seed: int = 0) -> tuple[list[dict], int]:
    """Each run against the first, paired on the pairs that all of them answered (matched by user
    and item). Returns the comparisons and the number of shared pairs."""
    answered = [{_key(r): r for r in read_jsonl(path)} for path in prediction_files]
    shared = sorted(set.intersection(*(set(a) for a in answered))) if answered else []
    if not shared or scale is None:
        return [], len(shared)
    errors = [abs_errors([a[k]["rating"] for k in shared], scored_predictions([a[k] for k in shared], scale))
              for a in answered]
    return [compare(labels[j], errors[j], labels[0], errors[0], seed).as_dict()
            for j in range(1, len(labels))], len(shared)


def compare_main(argv: list[str]) -> int:
    from kit.plots import comparison_plot

    ap = argparse.ArgumentParser(prog="python -m kit.evaluate compare")
    ap.add_argument("runs", nargs="+", help="run folders (or eval folders holding metrics.json)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--out", default=None, help="where to write comparison.md/.png (default: the first run's eval/)")
    args = ap.parse_args(argv)
    rows: dict[str, dict] = {}
    labels = args.labels or [None] * len(args.runs)
    if len(labels) != len(args.runs):
        raise ConfigError(f"--labels: {len(labels)} given for {len(args.runs)} runs")
    baselines: dict = {}
    files: list[Path] = []
    scale = None
    for run, label in zip(args.runs, labels):
        path = _metrics_path(Path(run), args.split)
        m = json.loads(path.read_text())
        rows[label or _label(path)] = m
        baselines = baselines or m.get("baselines", {})
        files.append(path.parent / "predictions.jsonl")
        settings = path.parent / "settings.json"
        if scale is None and settings.is_file():
            scale = tuple(json.loads(settings.read_text()).get("scale") or ()) or None
    names = list(rows)
    comparisons, shared = ([], 0)
    if len(names) > 1 and all(f.is_file() for f in files):
        comparisons, shared = run_comparisons(names, files, scale)
    rows.update({f"baseline: {k}": {**v, "mae_by_true_rating": {}} for k, v in baselines.items()})
    table = metrics_table(rows)
    if comparisons:
        paired = (f"Paired tests against {names[0]} on the {shared} pairs every run answered (sign-flip "
                  f"permutation test of the MAE difference, bootstrap interval):\n\n{comparisons_block(comparisons)}")
    else:
        paired = ("No paired test: the runs share no answered pairs (or a run has no predictions.jsonl), so "
                  "their MAEs are not comparable pair by pair.") if len(names) > 1 else ""
    out = Path(args.out) if args.out else _metrics_path(Path(args.runs[0]), args.split).parent.parent
    comparison_plot(list(rows), [r["mae"] for r in rows.values()], [r["rmse"] for r in rows.values()],
                    out / "comparison.png")
    atomic_write_text(out / "comparison.md", f"# Comparison on {args.split}\n\n{table}\n\n{paired}\n\n"
                                             "![comparison](comparison.png)\n")
    print(table)
    if paired:
        print("\n" + paired.replace("**", ""))
    print(f"\nkit: wrote {out / 'comparison.md'} and {out / 'comparison.png'}")
    return 0


def _metrics_path(run: Path, split: str) -> Path:
    for candidate in (run / "metrics.json", run / "eval" / split / "metrics.json"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{run}: no metrics.json (run python -m kit.evaluate --run {run} --split {split} first)")


def _label(path: Path) -> str:
    run = path.parent.parent.parent if path.parent.parent.name == "eval" else path.parent
    return f"{run.name} ({path.parent.name})"


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kit.evaluate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a run folder written by kit.train (its config, data and adapter)")
    ap.add_argument("--config", help="a recipe, when there is no run folder")
    ap.add_argument("--data", help="a prepared data folder (python -m kit.data prepare) instead of the recipe's data")
    ap.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ap.add_argument("--limit", type=int, default=None,
                    help="evaluate N pairs: the first N of a seeded order of the split, so a smaller N is a subset "
                         "of a larger one and finished answers are reused when N changes")
    ap.add_argument("--model", help="override the base model (a name, folder or hub id)")
    ap.add_argument("--adapter", help="a LoRA adapter folder, or 'none' for the base model (default: RUN/adapter)")
    ap.add_argument("--answers", type=int, default=1, help="sampled answers per pair (their mean is the prediction; their spread is reported; needs --temperature > 0)")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--baselines-only", action="store_true", help="print the classical baselines, no LLM")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--out", help="output folder (default: RUN/eval/<split>)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    return ap.parse_args(list(argv) if argv is not None else None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from kit.versions import check_versions

    check_versions(warn=lambda m: print(m, file=sys.stderr))
    try:
        if argv and argv[0] == "compare":
            return compare_main(argv[1:])
        return evaluate_main(parse_args(argv))
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
