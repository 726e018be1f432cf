"""Prove the kit's GPU training path: for each architecture, a random-weight model is built,
loaded by name through the kit's own loader (4-bit as the recipe says), trained for a few GRPO
steps by the kit's trainer on the synthetic catalog, its adapter saved, reloaded and used to
generate. Prints one JSON document (step time, generated tokens/s, peak memory).

    python benchmarks/gpu/check.py                       # GPU: qwen2.5-0.5b and qwen2.5-3b, 5 steps each
    python benchmarks/gpu/check.py --device cpu --tiny   # CPU: the tiny model, 1 step (the test runs this)

Each model runs in its own process (clean peak memory). Without vLLM on the machine the
recipe's `fast_inference: auto` falls back to transformers generation: the output says which.
benchmarks/gpu/check.sh installs the carried wheels first; docs/gpu.md says how to run it.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.gpu.measure import (counting_generate, grpo_steps, peak_memory, reset_peak,  # noqa: E402
                                    resolve_device_and_output, run_child, step_seconds, summarize_steps,
                                    write_json)
from benchmarks.gpu.random_models import build_random_model, tokenizer_dir_for  # noqa: E402

DEFAULT_WORK = Path(os.environ.get("KIT_GPU_WORK", "/tmp/kit-gpu-check"))
GPU_MODELS = ["qwen2.5-0.5b", "qwen2.5-3b"]


def check_overrides(arch: str, folder: Path, out: Path, steps: int, tiny: bool) -> list[str]:
    """The recipe as written, on the synthetic catalog, for `steps` steps, evaluation off."""
    common = [f"name=gpu-check-{arch}", f"output_dir={out}", "data.source=synthetic", "data.path=null",
              "data.prepare=null", f"model.name={folder}", f"grpo.max_steps={steps}", f"grpo.save_steps={steps}",
              "grpo.logging_steps=1", "evaluation.enabled=false", "priming.enabled=false"]
    if tiny:  # seconds on a CPU: a short budget, 4-bit layers as on the GPU
        return common + ["data.max_train=8", "model.load_in_4bit=true", "model.dtype=float32"]
    return common + ["data.max_train=64"]  # enough prompts for the steps; rendering 2,400 would cost a minute


def run_one(arch: str, device: str, steps: int, recipe: str, work: Path, extra: list[str], pack: Path | None,
            gen_tokens: int, tiny: bool = False) -> dict[str, Any]:
    """Build, train, save, reload, generate; everything measured. Runs in the calling process."""
    from kit.backend import select_backend
    from kit.config import load_config

    folder = work / "models" / arch
    out = work / "runs" / arch
    cfg = load_config(recipe, check_overrides(arch, folder, out, steps, tiny) + extra)
    select_backend(cfg.backend)  # unsloth first, when it is the backend
    import torch

    from kit.data import count_prompt_tokens, load_task_data, sample_messages
    from kit.model import generate, has_gpu, load_adapter
    from kit.prompts import render_chat
    from kit.train import run

    if device == "cuda" and not has_gpu():
        raise SystemExit("check: --device cuda but torch sees no GPU (or UNSLOTH_FORCE_CPU=1)")
    result: dict[str, Any] = {"model": arch, "device": device, "recipe": recipe, "steps": steps,
                              "backend": cfg.backend, "unsloth_imported": "unsloth" in sys.modules}
    if device == "cuda":
        result["card"] = torch.cuda.get_device_name(0)
    t0 = time.time()
    build_random_model(arch, tokenizer_dir_for(arch, pack), folder, device="cuda" if device == "cuda" else "cpu")
    result["build_s"] = round(time.time() - t0, 1)
    shutil.rmtree(out, ignore_errors=True)
    g = cfg.grpo
    result["settings"] = {"load_in_4bit": cfg.model.load_in_4bit, "lora_r": cfg.model.lora.r,
                          "max_seq_length": cfg.model.max_seq_length, "num_generations": g.num_generations,
                          "per_device_train_batch_size": g.per_device_train_batch_size,
                          "gradient_accumulation_steps": g.gradient_accumulation_steps,
                          "generation_batch_size": g.generation_batch_size, "max_completion_length": g.max_completion_length,
                          "optim": g.optim, "gradient_checkpointing": cfg.model.gradient_checkpointing}

    reset_peak(device)
    t1 = time.time()
    summary = run(cfg, log=lambda m: print(m, flush=True))
    result["train_s"] = round(time.time() - t1, 1)
    result["train_memory"] = peak_memory(device)
    rows = grpo_steps(out / "metrics.jsonl")
    gen_batch = g.generation_batch_size or g.per_device_train_batch_size * g.gradient_accumulation_steps
    completion_tokens = [r.get("completions/mean_length", 0.0) * gen_batch for r in rows]
    result["grpo"] = {"steps_done": summary["grpo"]["steps"], "seconds": summary["grpo"]["seconds"],
                      "completion_mean_length": [r.get("completions/mean_length") for r in rows],
                      # TRL's own per-step time (its training_step calls, generation included; no optimizer step)
                      "trl_step_time": [round(float(r["step_time"]), 3) for r in rows if "step_time" in r],
                      **summarize_steps(step_seconds(rows), completion_tokens)}
    result["adapter"] = summary["adapter"]
    for stage in ("priming", "eval_before", "eval_primed", "eval_after"):  # when the overrides turn them on
        if stage in summary:
            result[stage] = summary[stage]
    result["trainer_ran_with"] = trainer_settings(out)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()

    reset_peak(device)
    t2 = time.time()
    lm = load_adapter(cfg.model, out / "adapter")
    result["reload_s"] = round(time.time() - t2, 1)
    result["generation_backend"] = "vllm" if lm.fast_inference else "transformers generate"
    result["adapter_attached"] = type(lm.model).__name__
    data = load_task_data(cfg)
    frame = data.split(cfg.data.eval_split, cfg.evaluation.batch_size if not tiny else 2, seed=cfg.seed)
    messages = [sample_messages(row, data, cfg) for row in frame.iter_rows(named=True)]
    prompts = [render_chat(lm.tokenizer, m) for m in messages]
    lengths = sorted(count_prompt_tokens(lm.tokenizer, m) for m in messages)
    result["prompts"] = {"n": len(prompts), "tokens_median": lengths[len(lengths) // 2], "tokens_max": lengths[-1]}
    eos = {lm.tokenizer.eos_token_id} | set(_as_list(lm.model.generation_config.eos_token_id))
    if lm.fast_inference:  # vLLM: its own engine; count the text's tokens
        start = time.perf_counter()
        texts = generate(lm, prompts, max_new_tokens=gen_tokens, temperature=1.0, batch_size=len(prompts),
                         progress=False)
        seconds = time.perf_counter() - start
        tokens = sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    else:
        with counting_generate(lm.model, eos) as stats:
            texts = generate(lm, prompts, max_new_tokens=gen_tokens, temperature=1.0, batch_size=len(prompts),
                             progress=False)
        seconds, tokens = stats["seconds"], stats["tokens"]
    result["generation"] = {"sequences": len(texts), "max_new_tokens": gen_tokens, "tokens": int(tokens),
                            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                            "sample": texts[0][:160] if texts else ""}
    result["generation_memory"] = peak_memory(device)
    result["total_s"] = round(time.time() - t0, 1)
    return result


RAN_WITH = ("per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
            "steps_per_generation", "num_generations", "max_completion_length", "loss_type", "beta", "epsilon",
            "epsilon_high", "temperature", "optim", "bf16", "fp16", "gradient_checkpointing", "use_vllm")


def trainer_settings(out: Path) -> dict[str, Any]:
    """The GRPO settings the trainer really ran with, read back from the last checkpoint's
    training_args.bin: Unsloth rewrites some of them on a GPU (batch rounding, loss defaults),
    and the T4 arithmetic in docs/gpu.md assumes the recipe's micro-batch holds."""
    import torch

    saved = sorted((out / "checkpoints").glob("checkpoint-*/training_args.bin"))
    if not saved:
        return {}
    args = torch.load(saved[-1], weights_only=False)  # our own file, written by this run
    values = {k: getattr(args, k, None) for k in RAN_WITH}
    return {k: getattr(v, "value", v) for k, v in values.items()}  # enums (optim) as their names


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when torch sees a GPU")
    ap.add_argument("--models", default=",".join(GPU_MODELS), help=f"comma list of {GPU_MODELS} or tiny")
    ap.add_argument("--tiny", action="store_true", help="the tiny model on the smoke recipe, 1 step (CPU check)")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps (default 5; 1 with --tiny)")
    ap.add_argument("--recipe", default=None, help="default gpu-16gb (smoke with --tiny)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="more recipe overrides, e.g. --set grpo.max_completion_length=256")
    ap.add_argument("--gen-tokens", type=int, default=None, help="new tokens per sequence when generating after reload")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="models and runs are written here")
    ap.add_argument("--pack", type=Path, default=None, help="unpacked pack folder (for its tokenizers/)")
    ap.add_argument("--budget", type=float, default=540,
                    help="seconds for all models together (a GPU machine command may run 10 minutes): "
                         "each model gets what is left, and results are written after each")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here (default: $OUT/gpu_check.json)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiny:
        args.models, args.recipe = "tiny", args.recipe or "smoke"
        args.steps = args.steps or 1
        args.gen_tokens = args.gen_tokens or 16
    args.recipe = args.recipe or "gpu-16gb"
    args.steps = args.steps or 5
    args.gen_tokens = args.gen_tokens or 128
    resolve_device_and_output(args, "gpu_check.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:  # child: one model, result to a file
        res = run_one(args.one, args.device, args.steps, args.recipe, args.work, args.extra, args.pack,
                      args.gen_tokens, tiny=args.tiny)
        args.result.write_text(json.dumps(res))
        return 0
    doc: dict[str, Any] = {"check": "kit GRPO path with random-weight models", "device": args.device,
                           "note": "weights are random (shapes of the named architectures); no vLLM on this "
                                   "machine unless generation_backend says so", "results": []}
    deadline = time.time() + args.budget
    for arch in [m.strip() for m in args.models.split(",") if m.strip()]:
        left = deadline - time.time()
        if left < 30:
            doc["results"].append({"model": arch, "error": f"not started: the {args.budget:.0f} s budget is spent"})
            continue
        result_file = args.work / f"result-{arch}.json"
        args.work.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", arch, "--result", str(result_file),
               "--device", args.device, "--steps", str(args.steps), "--recipe", args.recipe, "--work", str(args.work),
               "--gen-tokens", str(args.gen_tokens)] + (["--tiny"] if args.tiny else []) + \
              (["--pack", str(args.pack)] if args.pack else []) + [x for kv in args.extra for x in ("--set", kv)]
        print(f"check: {arch} on {args.device}, {args.steps} GRPO steps of recipe {args.recipe}", flush=True)
        res = run_child(cmd, result_file, left)
        res.setdefault("model", arch)
        doc["results"].append(res)
        write_json(doc, args.json)  # after every model: a later time-out keeps what was measured
    return 0 if all("error" not in r for r in doc["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
