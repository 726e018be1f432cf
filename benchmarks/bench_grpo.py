"""Benchmark: the kit's Unsloth path against plain transformers + peft + bitsandbytes + TRL,
the same GRPO steps on the same model, settings, data and device, side by side in one run.

    python benchmarks/bench_grpo.py                                  # GPU: qwen2.5-0.5b, gpu-16gb recipe, 3 steps
    python benchmarks/bench_grpo.py --device cpu --model tiny --steps 2

Each side runs in its own process, so that importing unsloth (which patches trl, transformers
and peft) cannot touch the plain side; the plain side reports that unsloth stayed unimported.
Both sides take every GRPO setting from the kit (`kit.train.grpo_args` on the recipe), the
data from `kit.data`, the rewards from `kit.rewards`; only the model loading differs:
  unsloth: `kit.model.load_model` (Unsloth's FastLanguageModel, its LoRA and gradient checkpointing)
  plain:   TRL loads the folder itself with a BitsAndBytesConfig (nf4, double quantization) and a
           peft LoraConfig of the same rank, alpha and target modules.
Without vLLM on the machine both sides generate with transformers `generate`; the output says so.
On CPU the plain side's GRPO steps cannot run (TRL 1.15 scores log-probs with a Triton-only
kernel); its loading and generation are still measured, and the Unsloth side runs in full.
Reported: mean step time (steps 2..N), completion tokens per second of training, generated
tokens per second after training (the kit's `generate`, same prompts), peak memory, and the
ratios plain / Unsloth.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.gpu.measure import (counting_generate, peak_memory, reset_peak,  # noqa: E402
                                    resolve_device_and_output, run_child, summarize_steps)
from benchmarks.gpu.random_models import build_random_model, tokenizer_dir_for  # noqa: E402

SIDES = ("unsloth", "plain")
PLAIN_CPU = ("not run on CPU: TRL 1.15 scores GRPO log-probs with a Triton-only fused kernel "
             "(trl/kernels/chunked_logprob.py) that has no CPU driver; Unsloth's CPU backend replaces it, "
             "plain TRL cannot. Loading and generation are still measured")
DEFAULT_WORK = Path(os.environ.get("KIT_GPU_WORK", "/tmp/kit-gpu-check"))


def bench_overrides(folder: Path, out: Path, steps: int, tiny: bool) -> list[str]:
    common = [f"output_dir={out}", "data.source=synthetic", "data.path=null", "data.prepare=null",
              f"model.name={folder}", f"grpo.max_steps={steps}", "grpo.save_steps=1000", "grpo.logging_steps=1",
              "evaluation.enabled=false", "priming.enabled=false", "model.fast_inference='off'"]
    if tiny:
        return common + ["data.max_train=16", "model.dtype=float32"]
    return common + ["data.max_train=64"]


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step, generation of its completions included."""

        def __init__(self):
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            _sync()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            self.seconds.append(round(time.perf_counter() - self._start, 3))

    return StepTimer()


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def _plain_stack_only() -> None:
    """The plain side runs the kit's `trl` backend process setting: unsloth is never imported, so it
    cannot patch trl/transformers/peft there. The GRPO settings still come from kit.train.grpo_args,
    the one place that sets them."""
    from kit.backend import select_backend

    select_backend("trl")


def run_side(side: str, arch: str, device: str, steps: int, recipe: str, work: Path, extra: list[str],
             pack: Path | None, gen_tokens: int, tiny: bool) -> dict[str, Any]:
    """One side, in this process: load, train `steps` GRPO steps, generate; everything measured."""
    if side == "plain":
        _plain_stack_only()
    else:
        import kit.runtime  # noqa: F401  (unsloth first)
    import torch

    from kit.config import load_config
    from kit.data import load_task_data, sample_messages, to_prompt_dataset
    from kit.model import LoadedModel, _Shared, generate
    from kit.prompts import render_chat
    from kit.rewards import load_reward
    from kit.train import grpo_args

    folder = build_random_model(arch, tokenizer_dir_for(arch, pack), work / "models" / arch,
                                device="cuda" if device == "cuda" else "cpu")
    out = work / "bench" / side
    cfg = load_config(recipe, bench_overrides(folder, out, steps, tiny) + extra)
    result: dict[str, Any] = {"side": side, "model": arch, "device": device}
    if device == "cuda":
        result["card"] = torch.cuda.get_device_name(0)
    reset_peak(device)
    t0 = time.time()
    if side == "unsloth":
        from kit.model import load_model

        lm = load_model(cfg.model, seed=cfg.seed)
        model, tok = lm.model, lm.tokenizer
        trainer_model, extra_kwargs = model, {}
    else:
        from transformers import AutoTokenizer, BitsAndBytesConfig
        from peft import LoraConfig

        tok = AutoTokenizer.from_pretrained(str(folder))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if cfg.model.dtype != "auto":
            dtype = getattr(torch, cfg.model.dtype)
        else:  # what the kit picks for "auto": bf16 where the card has it, fp16 on older cards, bf16 on CPU
            dtype = torch.float16 if device == "cuda" and not torch.cuda.is_bf16_supported() else torch.bfloat16
        lora = cfg.model.lora
        extra_kwargs = {"peft_config": LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                  target_modules=list(lora.target_modules), bias="none",
                                                  task_type="CAUSAL_LM")}
        if cfg.model.load_in_4bit:
            extra_kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype)
        trainer_model = str(folder)
    data = load_task_data(cfg)
    train_ds, _ = to_prompt_dataset(data.split("train", cfg.data.max_train, seed=cfg.seed), data, cfg, tok)
    args = grpo_args(cfg, out, use_vllm=False)
    if side == "plain":
        args.gradient_checkpointing = cfg.model.gradient_checkpointing
        args.model_init_kwargs = {"dtype": dtype, **({"device_map": {"": 0}} if device == "cuda" else {})}
    timer = _step_timer()
    from trl import GRPOTrainer

    trainer = GRPOTrainer(model=trainer_model, processing_class=tok, args=args, train_dataset=train_ds,
                          reward_funcs=[load_reward(r.name) for r in cfg.rewards], callbacks=[timer], **extra_kwargs)
    result["load_s"] = round(time.time() - t0, 1)
    g = cfg.grpo
    gen_batch = g.generation_batch_size or g.per_device_train_batch_size * g.gradient_accumulation_steps
    if side == "plain" and device == "cpu":
        result["grpo"] = {"skipped": PLAIN_CPU}
    else:
        trainer.train()
        result["train_memory"] = peak_memory(device)
        lengths = [row["completions/mean_length"] for row in trainer.state.log_history
                   if "completions/mean_length" in row]
        result["grpo"] = {"steps_done": trainer.state.global_step,
                          "first_step_s": timer.seconds[0] if timer.seconds else None,
                          "completion_mean_length": lengths,
                          **summarize_steps(timer.seconds[1:], [x * gen_batch for x in lengths])}

    model = trainer.model
    model.eval()
    gc.collect()
    reset_peak(device)
    frame = data.split(cfg.data.eval_split, 8, seed=cfg.seed)
    prompts = [render_chat(tok, sample_messages(row, data, cfg)) for row in frame.iter_rows(named=True)]
    loaded = LoadedModel(shared=_Shared(model=model, tokenizer=tok, device=device, fast_inference=False, source=str(folder)),
                         live_adapter=True)
    eos = {tok.eos_token_id}
    with counting_generate(model, eos) as stats:
        generate(loaded, prompts, max_new_tokens=gen_tokens, temperature=1.0, batch_size=len(prompts), progress=False)
    result["generation"] = {"backend": "transformers generate", "sequences": stats["sequences"],
                            "tokens": stats["tokens"], "seconds": round(stats["seconds"], 2),
                            "tokens_per_s": round(stats["tokens"] / max(stats["seconds"], 1e-9), 1)}
    result["generation_memory"] = peak_memory(device)
    result["unsloth_imported"] = "unsloth" in sys.modules
    result["settings"] = {"load_in_4bit": cfg.model.load_in_4bit, "dtype": cfg.model.dtype, "lora_r": cfg.model.lora.r,
                          "num_generations": g.num_generations, "per_device_train_batch_size": g.per_device_train_batch_size,
                          "gradient_accumulation_steps": g.gradient_accumulation_steps, "generation_batch_size": gen_batch,
                          "max_completion_length": g.max_completion_length, "optim": g.optim,
                          "gradient_checkpointing": cfg.model.gradient_checkpointing}
    return result


def _memory(res: dict, key: str) -> float | None:
    mem = res.get(key) or {}
    return mem.get("peak_reserved_mib") or mem.get("peak_rss_mib")


def ratios(unsloth: dict, plain: dict) -> dict[str, float | None]:
    """plain / Unsloth for times and memory, Unsloth / plain for rates: above 1 means Unsloth is ahead."""

    def div(a, b):
        return round(a / b, 2) if a and b else None

    return {
        "step_time_plain_over_unsloth": div(plain.get("grpo", {}).get("mean_step_s"), unsloth.get("grpo", {}).get("mean_step_s")),
        "train_tokens_per_s_unsloth_over_plain": div(unsloth.get("grpo", {}).get("grpo_completion_tokens_per_s"),
                                                     plain.get("grpo", {}).get("grpo_completion_tokens_per_s")),
        "generate_tokens_per_s_unsloth_over_plain": div(unsloth.get("generation", {}).get("tokens_per_s"),
                                                        plain.get("generation", {}).get("tokens_per_s")),
        "train_peak_memory_plain_over_unsloth": div(_memory(plain, "train_memory"), _memory(unsloth, "train_memory")),
    }


def format_table(doc: dict) -> str:
    rows = ["| side | mean step s | train completion tok/s | generate tok/s | train peak MiB |", "|---|---|---|---|---|"]
    for res in doc["sides"]:
        if "error" in res:
            rows.append(f"| {res.get('side')} | error: {res['error']} | | | |")
            continue
        if "skipped" in res["grpo"]:
            rows.append(f"| {res['side']} | not run (see grpo.skipped) | - | {res['generation']['tokens_per_s']} | - |")
            continue
        rows.append(f"| {res['side']} | {res['grpo'].get('mean_step_s', '-')} | "
                    f"{res['grpo'].get('grpo_completion_tokens_per_s', '-')} | {res['generation']['tokens_per_s']} | "
                    f"{_memory(res, 'train_memory')} |")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when torch sees a GPU")
    ap.add_argument("--model", default=None, help="qwen2.5-0.5b (GPU default), qwen2.5-3b, or tiny (CPU default)")
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per side (the first is reported apart)")
    ap.add_argument("--recipe", default=None, help="default gpu-16gb (smoke for tiny)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="more recipe overrides, applied to both sides")
    ap.add_argument("--gen-tokens", type=int, default=None, help="new tokens per sequence in the generation test")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--pack", type=Path, default=None, help="unpacked pack folder's tokenizers/ (check.sh sets it)")
    ap.add_argument("--budget", type=float, default=540,
                    help="seconds for both sides together (a GPU machine command may run 10 minutes); each side "
                         "gets half, so that the second always runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here (default: $OUT/bench_grpo.json)")
    ap.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    resolve_device_and_output(args, "bench_grpo.json")
    args.model = args.model or ("qwen2.5-0.5b" if args.device == "cuda" else "tiny")
    tiny = args.model == "tiny"
    args.recipe = args.recipe or ("smoke" if tiny else "gpu-16gb")
    args.gen_tokens = args.gen_tokens or (16 if tiny else 128)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tiny = args.model == "tiny"
    if args.side:
        res = run_side(args.side, args.model, args.device, args.steps, args.recipe, args.work, args.extra, args.pack,
                       args.gen_tokens, tiny)
        args.result.write_text(json.dumps(res))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "bench": "GRPO steps: kit's Unsloth path vs plain transformers + peft + bitsandbytes + TRL",
        "model": args.model, "device": args.device, "recipe": args.recipe, "steps": args.steps, "overrides": args.extra,
        "note": "no vLLM here: both sides generate with transformers generate; random weights (shapes of the model)"
                + ("; on CPU Unsloth falls back to transformers + peft itself, and plain TRL cannot run GRPO"
                   if args.device == "cpu" else ""),
        "sides": []}
    for side in SIDES:
        result_file = args.work / f"bench-{side}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--result", str(result_file),
               "--device", args.device, "--model", args.model, "--steps", str(args.steps), "--recipe", args.recipe,
               "--work", str(args.work), "--gen-tokens", str(args.gen_tokens)] + \
              (["--pack", str(args.pack)] if args.pack else []) + [x for kv in args.extra for x in ("--set", kv)]
        print(f"bench: {side} side, {args.model} on {args.device}, {args.steps} GRPO steps", flush=True)
        res = run_child(cmd, result_file, args.budget / len(SIDES))
        res.setdefault("side", side)
        doc["sides"].append(res)
    ok = [r for r in doc["sides"] if "error" not in r]
    if len(ok) == 2:
        doc["ratios"] = ratios(*ok)
    text = json.dumps(doc, indent=1)
    print(text)
    print(format_table(doc))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if len(ok) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
