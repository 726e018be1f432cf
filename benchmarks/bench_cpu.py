"""Benchmark: the cpu-demo's model on this CPU in float32, bfloat16 and 4-bit.

    .venv/bin/python benchmarks/bench_cpu.py [--settings float32 bfloat16 4bit] [--config cpu-demo]
        [--gen-tokens 64] [--sft-steps 4] [--grpo-steps 3] [--json OUT.json]

Each setting runs in its own child process (so that load time and peak memory are its own):
load time, greedy generation tokens/s (batch of evaluation prompts, a fixed number of new
tokens), the kit's evaluation seconds per pair (greedy, stops at the closing rating tag),
format-priming (SFT) and GRPO step times through the kit's own trainers, the run's
calibration probe (what `budget.minutes` measures), and peak RSS. It says whether the CPU
computes bfloat16 natively. On a CPU without it, the bfloat16 row is the emulated cost.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"float32": ["model.dtype=float32"], "bfloat16": ["model.dtype=bfloat16"],
            "4bit": ["model.load_in_4bit=true", "model.dtype=auto"]}


def step_timer():
    """A TrainerCallback recording each optimizer step's wall time."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.t0)

    return Timer()


def _steady(times: list[float]) -> float:
    """Mean step time without the first step (warm-up), or the only one."""
    return statistics.mean(times[1:]) if len(times) > 1 else times[0]


def child(setting: str, recipe: str, gen_tokens: int, sft_steps: int, grpo_steps: int) -> dict:
    t0 = time.perf_counter()
    import kit.runtime  # noqa: F401
    import torch

    import_s = time.perf_counter() - t0
    from kit.config import load_config
    from kit.data import load_task_data
    from kit.model import _dtype, load_model
    from kit.prompts import render_chat
    from kit.data import sample_messages
    from kit.rewards import load_reward
    from kit.runtime import use_all_cores
    from kit.train import calibrate, eval_frame, grpo_trainer, priming_dataset, run_priming

    threads = use_all_cores()
    out = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    cfg = load_config(recipe, [*SETTINGS[setting], f"output_dir={out}", f"priming.samples={sft_steps * 4}",
                               "priming.epochs=1", "priming.batch_size=4", "grpo.save_steps=1000",
                               "grpo.log_completions_every=1000"])
    data = load_task_data(cfg)
    t0 = time.perf_counter()
    lm = load_model(cfg.model, seed=cfg.seed)
    load_s = time.perf_counter() - t0
    row = {"setting": setting, "dtype": str(_dtype(cfg.model.dtype)).replace("torch.", ""),
           "load_in_4bit": cfg.model.load_in_4bit, "threads": threads, "import_s": round(import_s, 1),
           "load_s": round(load_s, 1)}

    # the run's own calibration (what budget.minutes measures) on the untouched model
    figures, _ = calibrate(cfg, lm, data, priming_dataset(cfg, lm, data))
    row["calibration"] = {k: round(v, 3) for k, v in figures.items()}
    row["eval_s_per_pair"] = round(figures["eval_batch_s"] / cfg.evaluation.batch_size, 2)

    # raw decode speed: a batch of evaluation prompts, exactly gen_tokens new tokens each
    tok = lm.tokenizer
    frame = eval_frame(data, cfg, cfg.evaluation.batch_size)
    prompts = [render_chat(tok, sample_messages(r, data, cfg)) for r in frame.iter_rows(named=True)]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    lm.model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        lm.model.generate(**enc, max_new_tokens=gen_tokens, min_new_tokens=gen_tokens, do_sample=False,
                          pad_token_id=tok.pad_token_id)
        gen_s = time.perf_counter() - t0
    row.update(gen_batch=len(prompts), prompt_tokens=int(enc["input_ids"].shape[1]), gen_tokens=gen_tokens,
               gen_tokens_per_s=round(len(prompts) * gen_tokens / gen_s, 1))

    timer = step_timer()
    run_priming(cfg, lm, data, out, max_steps=sft_steps, callbacks=[timer], quiet=True)
    row.update(sft_first_step_s=round(timer.times[0], 2), sft_step_s=round(_steady(timer.times), 2),
               sft_batch=cfg.priming.batch_size)

    timer = step_timer()
    rewards = [load_reward(r.name) for r in cfg.rewards]
    trainer, _ = grpo_trainer(cfg, lm, data, out, rewards, max_steps=grpo_steps, callbacks=[timer],
                              say=lambda m: None, detail=lambda m: None)
    trainer.train()
    row.update(grpo_first_step_s=round(timer.times[0], 2), grpo_step_s=round(_steady(timer.times), 2),
               grpo_generations=cfg.grpo.num_generations, grpo_completion_tokens=cfg.grpo.max_completion_length)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)
    return row


def table(rows: list[dict], native: bool, cpu: str) -> str:
    lines = [f"CPU: {cpu}; native bfloat16 (AVX512-BF16/AMX or Arm BF16): {'yes' if native else 'no'}; "
             f"threads: {rows[0]['threads'] if rows else '?'}",
             "", "| setting | load | generation | eval per pair | SFT step | GRPO step | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | failed: {r['error'][:80]} | | | | | |")
            continue
        name = r["setting"] + (f" ({r['dtype']} compute)" if r["load_in_4bit"] else "")
        lines.append(f"| {name} | {r['load_s']:.1f} s | {r['gen_tokens_per_s']:.1f} tok/s | "
                     f"{r['eval_s_per_pair']:.2f} s | {r['sft_step_s']:.2f} s | {r['grpo_step_s']:.1f} s | "
                     f"{r['peak_rss_gb']:.2f} GB |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--config", default="cpu-demo")
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--sft-steps", type=int, default=4)
    ap.add_argument("--grpo-steps", type=int, default=3)
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.config, args.gen_tokens, args.sft_steps, args.grpo_steps)))
        return 0
    sys.path.insert(0, str(REPO))
    from kit.precision import cpu_has_native_bf16, machine_bf16

    native = cpu_has_native_bf16(*machine_bf16())
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for setting in args.settings:
        t0 = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", setting, "--config", args.config,
                               "--gen-tokens", str(args.gen_tokens), "--sft-steps", str(args.sft_steps),
                               "--grpo-steps", str(args.grpo_steps)], cwd=REPO, env=env, capture_output=True,
                              text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not lines:
            rows.append({"setting": setting, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(lines[-1]))
        print(f"{setting}: {time.time() - t0:.0f} s wall", file=sys.stderr, flush=True)
    print(table(rows, native, cpu_name()))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "native_bf16": native, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
