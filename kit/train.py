"""`python -m kit.train [--config RECIPE] [--resume] [key=value ...]`

Format priming (optional SFT on reference answers), then GRPO with the recipe's rewards,
then the same held-out evaluation before and after. Output directory:
config.yaml, metrics.jsonl, completions.jsonl, checkpoints/, adapter/, eval_*.json, summary.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from kit.config import ConfigError, KitConfig, check_overrides, dump_config, load_config
from kit.data import to_prompt_dataset
from kit.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from kit.rewards import RewardError, load_recipe_rewards

DEFAULT_CPU_RECIPE = "cpu-demo"
DEFAULT_GPU_RECIPE = "gpu-16gb"


# --------------------------------------------------------------------------- logging helpers

def metrics_callback(path: Path, phase: str):
    """A TrainerCallback appending one JSON line per logged step to metrics.jsonl."""
    from transformers import TrainerCallback

    class MetricsToJsonl(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                append_jsonl(path, {"phase": phase, "step": state.global_step, "time": round(time.time(), 3),
                                    **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}})

    return MetricsToJsonl()


def with_completion_log(rewards: list[Callable], every: int, path: Path, out=print,
                        weights: list[float] | None = None) -> list[Callable]:
    """Wrap the first reward so that every N steps one sampled completion and its reward
    breakdown go to completions.jsonl and the console (TRL's own table every step is slow)."""
    if not rewards:
        return rewards
    first, last_step = rewards[0], {"step": -1}

    def logged(completions, **kwargs):
        values = first(completions, **kwargs)
        state = kwargs.get("trainer_state")
        step = getattr(state, "global_step", None)
        if step is not None and step % every == 0 and step != last_step["step"] and completions:
            last_step["step"] = step
            one = {k: (v[:1] if isinstance(v, list) else v) for k, v in kwargs.items() if k != "trainer_state"}
            breakdown = {fn.__name__: fn([completions[0]], **one)[0] for fn in rewards[1:]}
            breakdown[first.__name__] = values[0]
            from kit.rewards import completion_text

            text = completion_text(completions[0])
            record = {"step": step, "rating": one.get("rating", [None])[0], "rewards": breakdown, "completion": text}
            if weights is not None:  # the recipe's weights and the weighted total, as the app shows them
                record["weights"] = {fn.__name__: w for fn, w in zip(rewards, weights)}
                record["total"] = sum(w * breakdown[fn.__name__] for fn, w in zip(rewards, weights))
            append_jsonl(path, record)
            out(f"\n[step {step}] true rating {record['rating']} rewards {json.dumps(breakdown)}\n{text[:600]}\n")
        return values

    logged.__name__ = first.__name__
    return [logged, *rewards[1:]]


# --------------------------------------------------------------------------- phases

def _device_flags() -> dict:
    from kit.model import has_gpu

    if not has_gpu():
        return {"use_cpu": True, "bf16": False, "fp16": False}
    import torch

    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def run_priming(cfg: KitConfig, lm, data, out: Path) -> dict:
    """Supervised format priming on reference answers (loss on the answer only)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    p = cfg.priming
    if p.traces:
        records = read_jsonl(Path(p.traces))
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records][: p.samples])
    else:
        frame = data.split("train", p.samples, seed=cfg.seed + 1)
        ds, _ = to_prompt_dataset(frame, data, cfg, lm.tokenizer, with_reference=True)
        ds = ds.select_columns(["prompt", "completion"])
    args = SFTConfig(
        output_dir=str(out / "priming"), num_train_epochs=p.epochs, per_device_train_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, learning_rate=p.learning_rate,
        lr_scheduler_type="linear", warmup_steps=0, logging_steps=max(1, cfg.grpo.logging_steps),
        save_strategy="no", report_to=[], seed=cfg.seed, max_length=cfg.model.max_seq_length,
        completion_only_loss=True, dataset_num_proc=1, **_device_flags())
    trainer = SFTTrainer(model=lm.model, args=args, train_dataset=ds, processing_class=lm.tokenizer,
                         callbacks=[metrics_callback(out / "metrics.jsonl", "priming")])
    t0 = time.time()
    result = trainer.train()
    lm.model.save_pretrained(str(out / "priming" / "adapter"))
    return {"steps": result.global_step, "train_loss": result.training_loss, "seconds": round(time.time() - t0, 1),
            "samples": len(ds)}


def grpo_args(cfg: KitConfig, out: Path, use_vllm: bool):
    """Every GRPO setting the kit relies on, set explicitly (Unsloth changes some defaults)."""
    from trl import GRPOConfig

    g = cfg.grpo
    return GRPOConfig(
        output_dir=str(out / "checkpoints"), max_steps=g.max_steps, learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler_type, warmup_steps=g.warmup_steps, weight_decay=g.weight_decay,
        max_grad_norm=g.max_grad_norm, optim=g.optim, adam_beta1=0.9, adam_beta2=0.99,
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        generation_batch_size=g.generation_batch_size or g.per_device_train_batch_size * g.gradient_accumulation_steps,
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        temperature=g.temperature, top_p=g.top_p, top_k=0, repetition_penalty=1.0,
        beta=g.beta, epsilon=g.epsilon, epsilon_high=g.epsilon if g.epsilon_high is None else g.epsilon_high,
        loss_type=g.loss_type, scale_rewards=g.scale_rewards,
        num_iterations=g.num_iterations, importance_sampling_level="token",
        mask_truncated_completions=g.mask_truncated_completions, disable_dropout=True,
        reward_weights=[r.weight for r in cfg.rewards], shuffle_dataset=True, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=g.logging_steps, save_strategy="steps", save_steps=g.save_steps,
        save_total_limit=g.save_total_limit, report_to=[], log_completions=False,
        remove_unused_columns=False, use_vllm=use_vllm, **({"vllm_mode": "colocate"} if use_vllm else {}),
        **_device_flags())


def _reload_adapter_weights(model, adapter_dir: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))


def lora_nonzero(adapter_dir: Path) -> tuple[int, int]:
    """(non-zero lora_B tensors, lora_B tensors): lora_B starts at zero, so a trained adapter has some."""
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    b = [t for k, t in tensors.items() if "lora_B" in k]
    return sum(int(t.abs().sum() > 0) for t in b), len(b)


def last_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return ckpts[-1] if ckpts else None


def _evaluate(cfg, lm, data, out: Path, name: str, log=print) -> dict:
    """Greedy answers on the held-out pairs, parsed and scored. A result on disk is reused only
    when the settings that made it (model, dtype, adapter in memory, pairs, decoding, prompt,
    data) match this run's; otherwise it is recomputed with a note saying what differs."""
    from kit import stage_cache
    from kit.evaluate import predict, score_predictions

    path = out / f"eval_{name}.json"
    frame = data.split(cfg.data.eval_split, cfg.evaluation.samples, seed=cfg.seed)
    settings = {**stage_cache.eval_settings(cfg, stage_cache.model_dtype(lm.model, cfg.model.dtype),
                                            lm.adapter_dir, cfg.data.eval_split, data.scale),
                "pairs": stage_cache.pairs_digest(frame), "n": len(frame)}
    if stage_cache.reusable(path, settings, log):
        return json.loads(path.read_text())["metrics"]
    stage_cache.forget(path)
    lm.model.eval()
    rows = predict(lm, frame, data, cfg, desc=f"eval ({name})")
    metrics = score_predictions(rows, data.scale)
    write_jsonl(out / f"predictions_{name}.jsonl", rows)
    atomic_write_json(path, {"metrics": metrics, "split": cfg.data.eval_split})
    stage_cache.remember(path, settings)
    return metrics


# --------------------------------------------------------------------------- the run

def prepare_output_dir(cfg: KitConfig, resume: bool, log=print) -> tuple[Path, Path | None]:
    """Create the run folder, save the resolved config, and find the checkpoint to resume from.
    A finished run is never overwritten without --resume."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = last_checkpoint(out) if resume else None
    if not resume and (out / "adapter").exists():
        raise SystemExit(f"kit: {out} already holds a finished run: pass --resume, or output_dir=NEW_DIR")
    if resume and (out / "config.yaml").is_file() and (out / "config.yaml").read_text() != dump_config(cfg):
        log(f"kit: note: {out}/config.yaml differs from this config; the new one is used and saved")
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    if not resume:
        for stale in ("metrics.jsonl", "completions.jsonl"):
            (out / stale).unlink(missing_ok=True)
    elif ckpt is not None:  # keep the metrics history consistent with the checkpoint we resume from
        step = int(ckpt.name.split("-")[-1])
        kept = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("phase") != "grpo" or r.get("step", 0) <= step]
        write_jsonl(out / "metrics.jsonl", kept)
    return out, ckpt


def run(cfg: KitConfig, resume: bool = False, log=print) -> dict:
    import kit.runtime  # noqa: F401  (unsloth before trl/transformers/peft)
    import random

    import numpy as np
    import torch

    from kit.data import load_task_data
    from kit.model import load_model

    rewards = [r.fn for r in load_recipe_rewards(cfg.rewards)]  # checked (kwargs too) before anything is written
    out, ckpt = prepare_output_dir(cfg, resume, log)
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    t0 = time.time()
    data = load_task_data(cfg)
    log(f"kit: data: {len(data.splits['train'])} train / {len(data.splits['valid'])} valid / "
        f"{len(data.splits['test'])} test samples, scale {data.scale[0]:g}-{data.scale[1]:g}")
    lm = load_model(cfg.model, seed=cfg.seed, device=cfg.device)
    log(f"kit: model {cfg.model.name} on {lm.device} (vLLM: {lm.fast_inference}) loaded in {time.time() - t0:.0f}s")
    summary: dict[str, Any] = {"name": cfg.name, "model": cfg.model.name, "device": lm.device}

    if cfg.evaluation.enabled and cfg.evaluation.before_training:
        summary["eval_before"] = _evaluate(cfg, lm, data, out, "before", log)

    priming_adapter = out / "priming" / "adapter"
    if cfg.priming.enabled:
        from kit import stage_cache

        made_by = stage_cache.priming_settings(cfg, stage_cache.model_dtype(lm.model, cfg.model.dtype), data.scale)
        why = stage_cache.mismatch(priming_adapter, made_by)
        if why is None:
            _reload_adapter_weights(lm.model, priming_adapter)  # a resumed checkpoint's weights replace these
            lm.adapter_dir = str(priming_adapter)
            log("kit: format priming already done with these settings, reusing it")
        elif ckpt is not None:
            raise ConfigError(f"{ckpt} continues a format priming that does not match this config "
                              f"({priming_adapter}: {why}): "
                              "resume with the settings it was made with, or start afresh with output_dir=NEW_DIR")
        else:
            if priming_adapter.exists():
                log(f"kit: note: {priming_adapter} is not reused ({why}); recomputing")
            stage_cache.forget(priming_adapter)
            log(f"kit: format priming (SFT) on {cfg.priming.samples} reference answers")
            summary["priming"] = run_priming(cfg, lm, data, out)
            stage_cache.remember(priming_adapter, made_by)
            lm.adapter_dir = str(priming_adapter)  # vLLM generation applies the saved LoRA per request
            log(f"kit: priming done: {summary['priming']}")
        if cfg.evaluation.enabled:
            summary["eval_primed"] = _evaluate(cfg, lm, data, out, "primed", log)

    from trl import GRPOTrainer

    train_frame = data.split("train", cfg.data.max_train, seed=cfg.seed)
    train_ds, too_long = to_prompt_dataset(train_frame, data, cfg, lm.tokenizer)
    if too_long:
        log(f"kit: dropped {too_long} prompts longer than prompt.max_prompt_tokens={cfg.prompt.max_prompt_tokens}")
    if len(train_ds) == 0:
        raise SystemExit("kit: no training prompt fits prompt.max_prompt_tokens; raise it or shorten histories")
    reward_fns = with_completion_log(rewards, cfg.grpo.log_completions_every, out / "completions.jsonl", log,
                                     weights=[r.weight for r in cfg.rewards])
    trainer = GRPOTrainer(model=lm.model, processing_class=lm.tokenizer, reward_funcs=reward_fns,
                          args=grpo_args(cfg, out, lm.fast_inference), train_dataset=train_ds,
                          callbacks=[metrics_callback(out / "metrics.jsonl", "grpo")])
    t1 = time.time()
    log(f"kit: GRPO for {cfg.grpo.max_steps} steps" + (f", resuming from {ckpt.name}" if ckpt else ""))
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    summary["grpo"] = {"steps": result.global_step, "seconds": round(time.time() - t1, 1),
                       "seconds_per_step": round((time.time() - t1) / max(1, cfg.grpo.max_steps), 2)}

    save_adapter(lm, out / "adapter")
    lm.adapter_dir = str(out / "adapter")  # vLLM generation applies the saved LoRA per request
    nonzero, total = lora_nonzero(out / "adapter")
    summary["adapter"] = {"path": str(out / "adapter"), "lora_B_nonzero": nonzero, "lora_B_total": total}
    if nonzero == 0:
        log("kit: WARNING: every LoRA B matrix is zero: training did not move the adapter (reward spread was 0?)")

    if cfg.evaluation.enabled:
        summary["eval_after"] = _evaluate(cfg, lm, data, out, "after", log)
        eval_frame = data.split(cfg.data.eval_split, cfg.evaluation.samples, seed=cfg.seed)
        from kit.baselines import baseline_metrics

        summary["baselines"] = {k: {"mae": v["mae"], "rmse": v["rmse"]} for k, v in baseline_metrics(
            data.training_interactions(), eval_frame, data.scale, fitted=False).items()}
        if data.catalog is not None:
            from kit.data.synthetic import noise_floor

            means = [data.catalog.expected(u, i) for u, i in zip(eval_frame["user_id"], eval_frame["item_id"])]
            summary["noise_floor"] = noise_floor(means, data.catalog.noise, data.scale)
    summary["seconds_total"] = round(time.time() - t0, 1)
    atomic_write_json(out / "summary.json", summary)
    log(format_summary(summary))
    return summary


def save_adapter(lm, path: Path) -> None:
    """Save LoRA + tokenizer atomically (a temp folder renamed into place)."""
    import shutil

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.model.save_pretrained(str(tmp))
    lm.tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_summary(summary: dict) -> str:
    """Before/after table, measured the same way, with trivial baselines and the noise floor."""
    lines = ["", "| model | valid answers | MAE | RMSE | MAE (valid only) |", "|---|---|---|---|---|"]
    for key, label in (("eval_before", "base model"), ("eval_primed", "after format priming"),
                       ("eval_after", "after GRPO")):
        m = summary.get(key)
        if m:
            lines.append(f"| {label} | {m['valid_n']}/{m['n']} | {_fmt(m['mae'])} | {_fmt(m['rmse'])} | "
                         f"{_fmt(m['valid_mae'])} |")
    for name, m in summary.get("baselines", {}).items():
        lines.append(f"| baseline: {name} | - | {_fmt(m['mae'])} | {_fmt(m['rmse'])} | - |")
    if "noise_floor" in summary:
        f = summary["noise_floor"]
        lines.append(f"| oracle (noise floor) | - | {_fmt(f['mae'])} | {_fmt(f['rmse'])} | - |")
    lines.append("Malformed answers are scored with the user's earlier average (never with the truth).")
    return "\n".join(lines)


def _priming_steps(cfg: KitConfig, n_samples: int) -> int:
    p = cfg.priming
    return math.ceil(math.ceil(n_samples / p.batch_size) / p.gradient_accumulation_steps * p.epochs)


def validation_verdict(cfg: KitConfig, recipe: str) -> tuple[bool, str]:
    """The last line of --validate: what the run will do, and whether its prompts fit the token
    budget, counted with the model's tokenizer on the recipe's own data (nothing is trained; the
    bundled model is converted into the cache once if it is not there yet)."""
    budget = (f"prompt <= {cfg.prompt.max_prompt_tokens} + completion {cfg.grpo.max_completion_length} "
              f"<= {cfg.model.max_seq_length} tokens")
    parts = [f"{recipe}", f"{cfg.grpo.max_steps} GRPO steps"]
    if cfg.data.source == "prepared" and not (Path(cfg.data.path) / "meta.json").is_file():
        counted = f"prompts not counted ({cfg.data.path} is not prepared yet; the first run prepares it)"
        parts += [counted, budget]
        if cfg.priming.enabled:
            parts.insert(2, f"priming on {cfg.priming.samples} answers")
        return True, "kit: config OK: " + ", ".join(parts)
    from kit.data import count_prompt_tokens, load_task_data, sample_messages

    data = load_task_data(cfg)
    train = data.split("train", cfg.data.max_train, seed=cfg.seed)
    evaluation = data.split(cfg.data.eval_split, cfg.evaluation.samples, seed=cfg.seed)
    if cfg.priming.enabled:
        n = cfg.priming.samples if cfg.priming.traces else min(cfg.priming.samples, len(data.splits["train"]))
        parts.append(f"priming {_priming_steps(cfg, n)} SFT steps on {n} answers")
    try:
        from transformers import AutoTokenizer

        from kit.model_sources import resolve_model_source

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(cfg.model.name))
    except Exception as exc:  # an unreachable hub id: say what was not checked
        parts += [f"prompts not counted (no tokenizer for {cfg.model.name}: {str(exc).splitlines()[0][:120]})",
                  budget]
        return True, "kit: config OK: " + ", ".join(parts)

    def fitting(frame) -> int:
        return sum(count_prompt_tokens(tokenizer, sample_messages(r, data, cfg)) <= cfg.prompt.max_prompt_tokens
                   for r in frame.iter_rows(named=True))

    fit_train = fitting(train)
    parts.insert(2, f"{fit_train} training prompts fit (of {len(train)})")
    if cfg.evaluation.enabled:
        parts.append(f"{fitting(evaluation)} of {len(evaluation)} evaluation prompts fit "
                     f"({cfg.data.eval_split} split)")
    parts.append(budget)
    if fit_train == 0:
        return False, (f"kit: error: no training prompt fits prompt.max_prompt_tokens={cfg.prompt.max_prompt_tokens} "
                       f"(of {len(train)}): raise it or shorten data.history_user / data.review_chars")
    return True, "kit: config OK: " + ", ".join(parts)


# --------------------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kit.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", help="recipe YAML path or name in templates/recipes/ "
                    f"(default: {DEFAULT_CPU_RECIPE} without a GPU, {DEFAULT_GPU_RECIPE} with one)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    ap.add_argument("--validate", action="store_true", help="check the config, print it, count the prompts that fit, and exit")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. grpo.max_steps=10 output_dir=runs/x")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # a mistyped key is reported before anything heavy is imported
        check_overrides(args.overrides)
        if args.config is not None:
            load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    from kit.versions import check_versions

    import kit.runtime  # noqa: F401  (unsloth before trl/transformers/peft, once the config is known good)

    check_versions(warn=lambda m: print(m, file=sys.stderr))
    recipe = args.config
    if recipe is None:
        from kit.model import has_gpu

        recipe = DEFAULT_GPU_RECIPE if has_gpu() else DEFAULT_CPU_RECIPE
        print(f"kit: no --config given; {'a GPU was found' if has_gpu() else 'no GPU found'}, "
              f"running templates/recipes/{recipe}.yaml")
    try:
        cfg = load_config(recipe, args.overrides)
        if args.validate:
            load_recipe_rewards(cfg.rewards)
            print(dump_config(cfg), end="")
            ok, verdict = validation_verdict(cfg, cfg.name)
            print(verdict, file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 2
        run(cfg, resume=args.resume)
    except (ConfigError, RewardError) as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
