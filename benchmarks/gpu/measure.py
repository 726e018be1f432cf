"""Measurements shared by the GPU check and the GRPO benchmark: peak memory, step times,
generated tokens, and the child processes each measured run lives in."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

MIB = 1024 * 1024


def write_json(doc: dict, path: Path | None) -> None:
    """Print the report, and write it to `path` too when given."""
    text = json.dumps(doc, indent=1)
    print(text, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict[str, float]:
    """Peak GPU memory since the last reset (allocated by tensors, and reserved by the caching
    allocator, which is what the card must hold); on CPU the process's peak resident memory."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        return {"peak_allocated_mib": round(torch.cuda.max_memory_allocated() / MIB),
                "peak_reserved_mib": round(torch.cuda.max_memory_reserved() / MIB)}
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def grpo_steps(metrics_path: Path, phase: str = "grpo") -> list[dict[str, Any]]:
    """The per-step log rows that kit.train writes to metrics.jsonl (one per logged step)."""
    if not metrics_path.is_file():
        return []
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("phase") == phase and "loss" in r and "time" in r]


def step_seconds(rows: list[dict[str, Any]]) -> list[float]:
    """Wall time of steps 2..N from the log times, everything included (step 1 has no earlier log
    line; it also carries the warm-up, so it stays out of the mean either way)."""
    times = [r["time"] for r in rows]
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


def summarize_steps(seconds: list[float], completion_tokens: list[float]) -> dict[str, Any]:
    """Mean step time and completion tokens per second of training (generation + update)."""
    out: dict[str, Any] = {"step_seconds": seconds}
    if seconds:
        out["mean_step_s"] = round(sum(seconds) / len(seconds), 3)
    if seconds and completion_tokens:
        tokens = completion_tokens[-len(seconds):]
        out["grpo_completion_tokens_per_s"] = round(sum(tokens) / sum(seconds), 1)
    return out


def new_token_counts(ids, prompt_len: int, eos_ids: set[int]) -> list[int]:
    """Generated tokens per row: up to and including the first end token, or all of them."""
    counts = []
    for row in ids[:, prompt_len:].tolist():
        n = len(row)
        for k, token in enumerate(row):
            if token in eos_ids:
                n = k + 1
                break
        counts.append(n)
    return counts


@contextlib.contextmanager
def counting_generate(model, eos_ids: set[int]) -> Iterator[dict[str, float]]:
    """Count the tokens that `model.generate` produces and the seconds it takes, while the
    kit's own generation code calls it (the wrapper returns generate's output unchanged)."""
    stats = {"tokens": 0, "seconds": 0.0, "calls": 0, "sequences": 0}
    original = model.generate

    def generate(*args, **kwargs):
        start = time.perf_counter()
        ids = original(*args, **kwargs)
        _sync()
        stats["seconds"] += time.perf_counter() - start
        prompt = kwargs.get("input_ids", args[0] if args else None)
        counts = new_token_counts(ids, prompt.shape[1], eos_ids)
        stats["tokens"] += sum(counts)
        stats["sequences"] += len(counts)
        stats["calls"] += 1
        return ids

    model.generate = generate
    try:
        yield stats
    finally:
        model.generate = original


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def resolve_device_and_output(args, json_name: str) -> None:
    """Fill `args.device` (cuda when torch sees a GPU) and `args.json` ($OUT/json_name when OUT is
    set), and send a CPU run down Unsloth's CPU path even on a GPU machine."""
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu":
        os.environ["UNSLOTH_FORCE_CPU"] = "1"
    if args.json is None and os.environ.get("OUT"):
        args.json = Path(os.environ["OUT"]) / json_name


def run_child(cmd: list[str], result: Path, timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measured job in its own process (clean peak memory, no patching across jobs) and
    read the JSON it leaves in `result`; a crash or a time-out comes back as an error entry."""
    result.unlink(missing_ok=True)
    start = time.time()
    try:
        proc = subprocess.run(cmd, timeout=timeout_s, env={**os.environ, **(env or {})})
        code: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        code = f"timed out after {timeout_s:.0f} s"
    if result.is_file():
        return json.loads(result.read_text())
    return {"error": f"exit {code}" if isinstance(code, int) else code, "seconds": round(time.time() - start, 1)}
