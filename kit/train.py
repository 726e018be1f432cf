"""`python -m kit.train [--config RECIPE] [--resume] [key=value ...]`

Format priming (optional SFT on reference answers), then GRPO with the recipe's rewards,
then the same held-out evaluation before and after. With `budget.minutes` the stages are
sized to fit (kit.budget). The console shows one bar per stage; the rest goes to the run
folder: config.yaml, plan.json, train.log, metrics.jsonl, completions.jsonl, checkpoints/,
adapter/, eval_*.json, summary.json.
"""
from __future__ import annotations

import time

STARTED = time.time()  # a time budget counts from here: the heavy imports below are part of a run

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

from kit.budget import Costs, Deadline, Plan, Sizes, Timeline, grpo_step_estimate, make_plan, priming_steps  # noqa: E402
from kit import stage_cache  # noqa: E402
from kit.config import ConfigError, KitConfig, check_overrides, dump_config, load_config  # noqa: E402
from kit.data import select_references, to_prompt_dataset  # noqa: E402
from kit.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl  # noqa: E402
from kit.processes import (gather, is_main, local_world_size, wait_for_everyone, weights_sharded,  # noqa: E402
                           world_size)
from kit.progress import Console, drop_default_bars, format_duration, trainer_progress  # noqa: E402
from kit.rewards import RewardError, load_recipe_rewards  # noqa: E402

DEFAULT_CPU_RECIPE = "cpu-demo"
DEFAULT_GPU_RECIPE = "gpu-16gb"


# --------------------------------------------------------------------------- logging helpers

def metrics_callback(path: Path, phase: str):
    """A TrainerCallback appending one JSON line per logged step to metrics.jsonl."""
    from transformers import TrainerCallback

    class MetricsToJsonl(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:  # one line per step, not one per process
                append_jsonl(path, {"phase": phase, "step": state.global_step, "time": round(time.time(), 3),
                                    **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}})

    return MetricsToJsonl()


class RewardWatch:
    """Wraps the first reward: records the share of format-valid completions of each step (for
    the console), and every N steps writes one sampled completion with its reward breakdown to
    completions.jsonl and the log (TRL's own table every step is slow)."""

    def __init__(self, rewards: list[Callable], every: int, path: Path, out=print, style: str = "reczero",
                 weights: list[float] | None = None):
        self.rewards, self.every, self.path, self.out, self.style = rewards, every, path, out, style
        self.weights = weights
        self.last_step = -1
        self.valid_share: float | None = None
        self.seen: set[tuple[str, str]] = set()  # the (user, item) prompts this process was given

    def wrapped(self) -> list[Callable]:
        if not self.rewards:
            return self.rewards
        first = self.rewards[0]

        def logged(completions, **kwargs):
            values = first(completions, **kwargs)
            self._watch(first, values, completions, kwargs)
            return values

        logged.__name__ = first.__name__
        return [logged, *self.rewards[1:]]

    def _watch(self, first, values, completions, kwargs) -> None:
        from kit.rewards import _scales, completion_text, parse_answer

        if not completions:
            return
        self.seen.update(zip(map(str, kwargs.get("user_id", [])), map(str, kwargs.get("item_id", []))))
        scales = _scales(kwargs, len(completions))
        valid = [parse_answer(c, scale, self.style).valid for c, scale in zip(completions, scales)]
        self.valid_share = sum(valid) / len(valid)
        state = kwargs.get("trainer_state")
        step = getattr(state, "global_step", None)
        if step is None or step % self.every or step == self.last_step or not is_main():
            return
        self.last_step = step
        one = {k: (v[:1] if isinstance(v, list) else v) for k, v in kwargs.items() if k != "trainer_state"}
        breakdown = {fn.__name__: fn([completions[0]], **one)[0] for fn in self.rewards[1:]}
        breakdown[first.__name__] = values[0]
        text = completion_text(completions[0])
        record = {"step": step, "rating": one.get("rating", [None])[0], "rewards": breakdown, "completion": text}
        if self.weights is not None:  # the recipe's weights and the weighted total, as the app shows them
            record["weights"] = {fn.__name__: w for fn, w in zip(self.rewards, self.weights)}
            record["total"] = sum(w * breakdown[fn.__name__] for fn, w in zip(self.rewards, self.weights))
        append_jsonl(self.path, record)
        self.out(f"[step {step}] true rating {record['rating']} rewards {json.dumps(breakdown)}\n{text[:600]}")


# --------------------------------------------------------------------------- phases

@dataclass
class PrimingSet:
    """The SFT examples, and how they were chosen (for the summary: RecOne's rejection sampling
    says how many answers it drew to keep these)."""

    dataset: Any
    selection: dict


def priming_dataset(cfg: KitConfig, lm, data) -> PrimingSet:
    """The priming examples: `priming.traces`, or the synthetic teacher's answers (all of them, or
    with `priming.keep: correct` those whose rating equals the truth)."""
    from datasets import Dataset

    p = cfg.priming
    if p.traces:
        from kit.traces import as_messages

        records = checked_traces(cfg, data)
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": as_messages(r["completion"])}
                                for r in records][: p.samples])
        return PrimingSet(ds, {"source": "traces"})
    chosen = select_references(data, p.samples, p.keep, cfg.data.review_chars, seed=cfg.seed + 1)
    ds, _ = to_prompt_dataset(chosen.frame, data, cfg, lm.tokenizer, with_reference=True)
    return PrimingSet(ds.select_columns(["prompt", "completion"]),
                      {"source": "teacher", "keep": p.keep, "drawn": chosen.drawn, "kept": chosen.kept})


def checked_traces(cfg: KitConfig, data) -> list[dict]:
    """priming.traces, every line checked by the rules kit.traces keeps by (a bad line stops the
    run before any training, naming the line)."""
    from kit.traces import TraceError, data_rating_step, read_traces

    try:
        return read_traces(cfg.priming.traces, data.scale, cfg.prompt.style,
                           data_rating_step(data))
    except TraceError as exc:
        raise ConfigError(f"priming.traces: {exc}") from None


def run_priming(cfg: KitConfig, lm, data, out: Path, max_steps: int = -1, callbacks: list | None = None,
                quiet: bool = False, examples: PrimingSet | None = None) -> dict:
    """Supervised format priming on reference answers (loss on the answer only); `max_steps`
    cuts the recipe's epochs short (a time budget), -1 keeps them."""
    from trl import SFTConfig, SFTTrainer

    from kit.model import trainer_flags

    p = cfg.priming
    examples = examples or priming_dataset(cfg, lm, data)
    ds = examples.dataset
    args = SFTConfig(
        output_dir=str(out / "priming"), num_train_epochs=p.epochs, max_steps=max_steps,
        per_device_train_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, learning_rate=p.learning_rate,
        lr_scheduler_type="linear", warmup_steps=0, logging_steps=max(1, cfg.grpo.logging_steps),
        save_strategy="no", report_to=[], seed=cfg.seed, max_length=cfg.model.max_seq_length,
        completion_only_loss=True, dataset_num_proc=1, **trainer_flags(cfg.model))
    trainer = SFTTrainer(model=lm.model, args=args, train_dataset=ds, processing_class=lm.tokenizer,
                         callbacks=[metrics_callback(out / "metrics.jsonl", "priming"), *(callbacks or [])])
    if quiet:
        drop_default_bars(trainer)
    t0 = time.time()
    result = trainer.train()
    if is_main():
        lm.model.save_pretrained(str(out / "priming" / "adapter"))
    wait_for_everyone()
    return {"steps": result.global_step, "train_loss": result.training_loss, "seconds": round(time.time() - t0, 1),
            "samples": len(ds), **examples.selection}


def grpo_args(cfg: KitConfig, out: Path, use_vllm: bool, max_steps: int | None = None):
    """Every GRPO setting the kit relies on, set explicitly (Unsloth changes some defaults).
    `max_steps` (a time budget's) replaces grpo.max_steps. With several processes each one
    generates what one process alone would (TRL's generation batch counts all of them)."""
    from trl import GRPOConfig

    from kit.backend import current_backend
    from kit.model import trainer_flags

    g = cfg.grpo
    vllm: dict[str, Any] = {}
    if use_vllm:
        mode = g.vllm_mode if current_backend() == "trl" else "colocate"
        vllm = {"vllm_mode": mode, **({"vllm_server_base_url": g.vllm_server_url} if mode == "server" else {})}
    return GRPOConfig(
        output_dir=str(out / "checkpoints"), max_steps=max_steps or g.max_steps, learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler_type, warmup_steps=g.warmup_steps, weight_decay=g.weight_decay,
        max_grad_norm=g.max_grad_norm, optim=g.optim, adam_beta1=0.9, adam_beta2=0.99,
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        generation_batch_size=world_size() * (g.generation_batch_size
                                              or g.per_device_train_batch_size * g.gradient_accumulation_steps),
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        temperature=g.temperature, top_p=g.top_p, top_k=0, repetition_penalty=1.0,
        beta=g.beta, epsilon=g.epsilon, epsilon_high=g.epsilon if g.epsilon_high is None else g.epsilon_high,
        loss_type=g.loss_type, scale_rewards=g.scale_rewards,
        num_iterations=g.num_iterations, importance_sampling_level="token",
        mask_truncated_completions=g.mask_truncated_completions, disable_dropout=True,
        reward_weights=[r.weight for r in cfg.rewards], shuffle_dataset=True, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=g.logging_steps, save_strategy="steps", save_steps=g.save_steps,
        save_total_limit=g.save_total_limit, report_to=[], log_completions=False,
        remove_unused_columns=False, use_vllm=use_vllm, **vllm,
        **trainer_flags(cfg.model))


def last_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return ckpts[-1] if ckpts else None


def eval_frame(data, cfg: KitConfig, n: int):
    """The held-out pairs of an evaluation round: the recipe's seeded sample, or, when a budget
    asks for fewer, its first n by the same seed (a smaller n is a subset of a larger one)."""
    return data.split(cfg.data.eval_split, min(n, cfg.evaluation.samples), seed=cfg.seed)


def _evaluate(cfg, lm, data, out: Path, name: str, frame=None, known: dict | None = None,
              console: Console | None = None, log: Callable[[str], Any] | None = None) -> dict:
    """Greedy answers on the held-out pairs, parsed and scored. A result on disk is reused only
    when the settings that made it (model, dtype, adapter in memory, pairs, decoding, prompt,
    data) match this run's; otherwise it is recomputed with a note saying what differs."""
    from kit import stage_cache
    from kit.evaluate import predict, score_predictions

    log = log or (console.say if console else print)
    path = out / f"eval_{name}.json"
    if frame is None:
        frame = eval_frame(data, cfg, cfg.evaluation.samples)
    settings = {**stage_cache.eval_settings(cfg, stage_cache.model_dtype(lm.model, cfg.model.dtype),
                                            lm.adapter_dir, cfg.data.eval_split, data.scale),
                "pairs": stage_cache.pairs_digest(frame), "n": len(frame)}
    if stage_cache.reusable(path, settings, log):
        return json.loads(path.read_text())["metrics"]
    stage_cache.forget(path)
    lm.model.eval()
    bar = console.bar(f"evaluation ({name})", len(frame), "pair") if console and not console.verbose else None
    progress = None
    if bar is not None:
        def progress(done: int) -> None:
            bar.update(done - bar.n)

    rows = predict(lm, frame, data, cfg, desc=f"eval ({name})", known=known, progress=progress)
    metrics = score_predictions(rows, data.scale, cfg.seed)
    if bar is not None:
        bar.set_postfix_str(f"valid {metrics['valid_n']}/{metrics['n']}, MAE {metrics['mae']:.3f}", refresh=False)
        bar.close()
    write_jsonl(out / f"predictions_{name}.jsonl", rows)
    atomic_write_json(path, {"metrics": metrics, "split": cfg.data.eval_split})
    stage_cache.remember(path, settings)
    return metrics


def calibrate(cfg: KitConfig, lm, data, priming_ds) -> tuple[dict, dict]:
    """Measure this machine, mostly on work the run needs anyway: the first evaluation batch with
    the base model (its answers are kept for the first round), a short sampled generation of one
    GRPO step's batch, and one training step's forward and backward pass over a priming batch
    (or, without priming, over prompts with those answers); no optimizer step, so the weights
    do not move. Returns (figures, reusable answers)."""
    from kit.data import sample_messages
    from kit.evaluate import _key, predict
    from kit.prompts import render_chat

    figures: dict[str, float] = {}
    rows: list[dict] = []
    frame = eval_frame(data, cfg, min(cfg.evaluation.batch_size, cfg.evaluation.samples))
    if cfg.evaluation.enabled:
        lm.model.eval()
        t0 = time.time()
        with _adapter_off(lm):
            rows = predict(lm, frame, data, cfg, progress=lambda done: None)
        seconds = time.time() - t0
        longest = max(len(lm.tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
        figures["eval_batch_s"] = seconds
        # as if every answer ran to max_new_tokens (primed answers are longer than the base model's)
        figures["per_pair_s"] = seconds / len(rows) * cfg.evaluation.max_new_tokens / max(1, min(
            longest, cfg.evaluation.max_new_tokens))
    figures.update(_grpo_generation_probe(cfg, lm, data))
    if priming_ds is not None and len(priming_ds):
        batch = priming_ds.select(range(min(cfg.priming.batch_size, len(priming_ds))))
        texts = [lm.tokenizer.apply_chat_template(list(r["prompt"]) + list(r["completion"]), tokenize=False)
                 for r in batch]
    else:
        texts = [render_chat(lm.tokenizer, sample_messages(r, data, cfg)) + a["completion"]
                 for r, a in zip(frame.iter_rows(named=True), rows)]
    if texts:
        lm.tokenizer.padding_side = "right"
        enc = lm.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                           truncation=True, max_length=cfg.model.max_seq_length)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        lm.model.train()
        t0 = time.time()
        loss = lm.model(**enc, labels=labels).loss
        loss.backward()
        figures["probe_step_s"] = time.time() - t0
        figures["probe_sequences"] = float(len(texts))
        lm.model.zero_grad(set_to_none=True)
        lm.model.eval()
        del loss
    known = {_key(r): r for r in rows} if cfg.evaluation.before_training else {}
    return figures, known


def _grpo_generation_probe(cfg: KitConfig, lm, data) -> dict[str, float]:
    """Seconds to sample one GRPO step's completions, from two short timed generations of the
    step's batch (a few tokens, then more): the difference is the cost per token, the rest the
    prompt's; extrapolated to grpo.max_completion_length."""
    from kit.data import sample_messages
    from kit.model import generate
    from kit.prompts import render_chat

    g = cfg.grpo
    n = g.generation_batch_size or g.per_device_train_batch_size * g.gradient_accumulation_steps
    row = next(data.split("train", 1, seed=cfg.seed).iter_rows(named=True))
    prompts = [render_chat(lm.tokenizer, sample_messages(row, data, cfg))] * n
    timed = []
    for tokens in (4, 20):
        t0 = time.time()
        texts = generate(lm, prompts, max_new_tokens=tokens, temperature=g.temperature, batch_size=n,
                         seed=cfg.seed, progress=False)
        made = max(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        timed.append((max(1, made), time.time() - t0))
    (n1, t1), (n2, t2) = timed
    per_token = max(0.0, (t2 - t1) / (n2 - n1)) if n2 > n1 else t2 / n2
    return {"grpo_generation_s": t1 + per_token * (g.max_completion_length - n1), "grpo_token_s": per_token}


def _adapter_off(lm):
    import contextlib

    return lm.model.disable_adapter() if hasattr(lm.model, "disable_adapter") else contextlib.nullcontext()


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
        for stale in ("metrics.jsonl", "completions.jsonl", "train.log", "plan.json"):
            (out / stale).unlink(missing_ok=True)
    elif ckpt is not None:  # keep the metrics history consistent with the checkpoint we resume from
        step = int(ckpt.name.split("-")[-1])
        kept = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("phase") != "grpo" or r.get("step", 0) <= step]
        write_jsonl(out / "metrics.jsonl", kept)
    return out, ckpt


def grpo_trainer(cfg: KitConfig, lm, data, out: Path, rewards: list[Callable], max_steps: int | None = None,
                 callbacks: list | None = None, say=print, detail=print):
    """TRL's GRPOTrainer on the training prompts with the recipe's rewards, and the RewardWatch
    that follows its completions. Prompts over prompt.max_prompt_tokens are dropped (said)."""
    from trl import GRPOTrainer

    from kit.backend import current_backend
    from kit.model import trl_vllm
    from kit.zero_variance import with_zero_variance_handling

    train_frame = data.split("train", cfg.data.max_train, seed=cfg.seed)
    train_ds, too_long = to_prompt_dataset(train_frame, data, cfg, lm.tokenizer)
    if too_long:
        say(f"kit: dropped {too_long} prompts longer than prompt.max_prompt_tokens={cfg.prompt.max_prompt_tokens}")
    if len(train_ds) == 0:
        raise SystemExit("kit: no training prompt fits prompt.max_prompt_tokens; raise it or shorten histories")
    watch = RewardWatch(rewards, cfg.grpo.log_completions_every, out / "completions.jsonl", detail, cfg.prompt.style,
                        weights=[r.weight for r in cfg.rewards])
    trainer_cls = with_zero_variance_handling(GRPOTrainer, cfg.grpo.zero_variance, cfg.grpo.max_redraws, cfg.seed)
    trainer = trainer_cls(model=lm.model, processing_class=lm.tokenizer, reward_funcs=watch.wrapped(),
                          args=grpo_args(cfg, out, lm.fast_inference if current_backend() == "unsloth"
                                         else trl_vllm(cfg.model), max_steps), train_dataset=train_ds,
                          callbacks=[metrics_callback(out / "metrics.jsonl", "grpo"), *(callbacks or [])])
    return trainer, watch


def deadline_callback(console: Console, deadline: Deadline, phase: str, planned: int):
    """A TrainerCallback that ends a stage early, saying so, when its next step would run past
    the time the stages after it need."""
    from transformers import TrainerCallback

    class StopAtDeadline(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0, self.first = time.time(), state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            done = state.global_step - self.first
            if state.global_step < planned and deadline.stop_now(time.time(), done, time.time() - self.t0):
                control.should_training_stop = True
                console.say(f"\nkit: {phase}: stopping after {state.global_step} of {planned} steps to stay within "
                            f"the budget (steps took {(time.time() - self.t0) / max(1, done):.0f} s here)")

    return StopAtDeadline()


def _eval_rounds(cfg: KitConfig, out: Path) -> tuple[str, ...]:
    """The evaluation rounds this run still has to do (a round on disk is reused)."""
    ev = cfg.evaluation
    wanted = (("eval_before", ev.before_training), ("eval_primed", cfg.priming.enabled), ("eval_after", True))
    return tuple(r for r, on in wanted if ev.enabled and on and not (out / f"{r}.json").is_file())


def plan_run(cfg: KitConfig, lm, data, out: Path, priming_ds, started: float, console: Console,
             resume: bool) -> tuple[Plan, dict, dict]:
    """The stages' sizes: the recipe's, or, with budget.minutes, measured and fitted (printed and
    saved as plan.json). Returns (plan, measured figures, base-model answers to reuse)."""
    from kit.runtime import available_cores

    saved = out / "plan.json"
    limits = Sizes(
        eval_pairs=min(cfg.evaluation.samples, len(data.splits[cfg.data.eval_split])),
        eval_rounds=_eval_rounds(cfg, out),
        priming_steps=0 if priming_ds is None else priming_steps(
            len(priming_ds), cfg.priming.batch_size, cfg.priming.gradient_accumulation_steps, cfg.priming.epochs),
        grpo_steps=cfg.grpo.max_steps, before_pairs=cfg.evaluation.before_samples)
    previous = json.loads(saved.read_text()) if resume and saved.is_file() else {}
    if previous.get("budget_s"):
        old = previous["sizes"]  # a budget chose them when the run started: keep them
        sizes = Sizes(min(old["eval_pairs"], limits.eval_pairs), limits.eval_rounds,
                      min(old["priming_steps"], limits.priming_steps) if limits.priming_steps else 0,
                      old["grpo_steps"], limits.before_pairs)
        console.say(f"kit: resuming with the sizes planned at the start ({saved})")
        return Plan(sizes, limits, {}, None, time.time() - started), {}, {}
    b = cfg.budget
    if b.minutes is None:
        plan = Plan(limits, limits, {}, None, time.time() - started)
        return plan, {}, {}
    budget_s = b.minutes * 60
    console.say(f"kit: measuring this machine for the {format_duration(budget_s)} budget "
                f"({available_cores()} cores): the first evaluation batch, a short GRPO generation, one training pass")
    figures, known = calibrate(cfg, lm, data, priming_ds)
    g, p = cfg.grpo, cfg.priming
    per_seq = figures.get("probe_step_s", 0.0) / max(1, figures.get("probe_sequences", 1))
    costs = Costs(
        per_pair=figures.get("per_pair_s", 0.0),
        per_priming_step=per_seq * p.batch_size * p.gradient_accumulation_steps,
        per_grpo_step=grpo_step_estimate(figures["grpo_generation_s"],
                                         per_seq * g.per_device_train_batch_size * g.gradient_accumulation_steps),
        done_pairs=len(known))
    floors = Sizes(eval_pairs=b.min_eval_pairs, eval_rounds=limits.eval_rounds, before_pairs=limits.before_pairs,
                   priming_steps=0 if priming_ds is None else priming_steps(
                       len(priming_ds), p.batch_size, p.gradient_accumulation_steps, min(b.min_priming_epochs, p.epochs)),
                   grpo_steps=b.min_grpo_steps)

    def describe_priming(steps: int) -> str:
        return f"{steps / max(1, limits.priming_steps) * p.epochs:.1f} of {p.epochs:g} epochs over {len(priming_ds)} examples"

    plan = make_plan(limits, floors, costs, budget_s, time.time() - started, describe_priming)
    figures = {k: round(v, 3) for k, v in figures.items()}
    return plan, figures, known


def run(cfg: KitConfig, resume: bool = False, log: Callable[[str], None] | None = None, verbose: bool = False,
        started: float | None = None, callbacks: list | None = None) -> dict:
    """Train and evaluate as the recipe says (see the module doc); returns the summary.
    Quiet by default: one bar per stage, the rest in OUTPUT_DIR/train.log (`verbose`: all on the console).
    `callbacks`: more transformers TrainerCallbacks for the GRPO stage (a notebook's live plot)."""
    from kit.backend import select_backend

    started = time.time() if started is None else started
    main = is_main()
    console = Console(verbose=verbose, say=log, silent=not main)
    select_backend(cfg.backend)  # unsloth (when it is the backend) before trl/transformers/peft
    from kit.model import has_gpu
    from kit.precision import resolve_precision
    from kit.runtime import use_all_cores

    if resume and world_size() > 1 and not has_gpu() and last_checkpoint(Path(cfg.output_dir)):
        raise ConfigError("--resume with several CPU processes: transformers 5.17 restores the optimizer state to "
                          "'cpu:0', which torch cannot load; resume with one process (python -m kit.train --resume "
                          "...: the checkpoint carries over), or on GPUs")
    if world_size() > 1 and cfg.backend != "trl":
        raise ConfigError(f"{world_size()} processes, but backend={cfg.backend} runs on one: set backend=trl "
                          "(or start one process: python -m kit.train)")
    if weights_sharded() and cfg.evaluation.enabled:
        raise ConfigError("evaluation.enabled with the weights split over the processes (ZeRO-3 / FSDP): one process "
                          "cannot generate alone; set evaluation.enabled=false and run python -m kit.evaluate --run "
                          "OUTPUT_DIR afterwards (one process), or use ZeRO-2 / plain DDP")
    if world_size() > 1 and cfg.budget.minutes:
        raise ConfigError("budget.minutes sizes a run by timing one process: set budget.minutes=null with "
                          "several processes")

    rewards = [r.fn for r in load_recipe_rewards(cfg.rewards)]  # checked (kwargs too) before anything is written
    on_gpu = has_gpu()
    precision = resolve_precision(cfg.model.dtype, on_gpu)
    threads = None if on_gpu else use_all_cores(processes=local_world_size())
    cfg.resolved = {"device": "cuda" if on_gpu else "cpu", "dtype": precision.dtype,
                    "dtype_reason": precision.reason, **({"cpu_threads": threads} if threads else {}),
                    "backend": cfg.backend, "processes": world_size(),  # the world size
                    "processes_per_machine": local_world_size()}
    if main:
        out, ckpt = prepare_output_dir(cfg, resume, console.say)
        console.open_log(out / "train.log")
    wait_for_everyone()  # the others read the folder the main process prepared
    if not main:
        out, ckpt = Path(cfg.output_dir), (last_checkpoint(Path(cfg.output_dir)) if resume else None)
    try:
        with console.libraries():
            return _run(cfg, rewards, out, ckpt, resume, console, precision, started, callbacks)
    finally:
        console.close()


def _run(cfg: KitConfig, rewards, out: Path, ckpt: Path | None, resume: bool, console: Console, precision,
         started: float, callbacks: list | None = None) -> dict:
    import random

    import numpy as np
    import torch

    from kit.data import load_task_data
    from kit.model import load_model, lora_nonzero, reload_adapter_weights, save_adapter

    say = console.say
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    say(f"kit: run '{cfg.name}' in {out} (full log: {out / 'train.log'})")
    threads = cfg.resolved.get("cpu_threads")
    say(f"kit: precision {precision.dtype}: {precision.reason}" + (f"; {threads} CPU threads" if threads else ""))
    if precision.warning:
        say(f"kit: WARNING: {precision.warning}")
    if world_size() > 1:
        say(f"kit: backend {cfg.backend}, {world_size()} processes: each trains on its own share of the prompts; "
            "the main one writes the run folder and evaluates")
    data = load_task_data(cfg) if is_main() else None  # the main process downloads / prepares, once
    wait_for_everyone()
    data = data or load_task_data(cfg)
    say(f"kit: data: {len(data.splits['train'])} train / {len(data.splits['valid'])} valid / "
        f"{len(data.splits['test'])} test samples, scale {data.scale[0]:g}-{data.scale[1]:g}")
    if cfg.priming.enabled and cfg.priming.traces:
        say(f"kit: priming on {len(checked_traces(cfg, data))} traces from {cfg.priming.traces}")
    lm = load_model(cfg.model, seed=cfg.seed, device=cfg.device)
    say(f"kit: model {cfg.model.name} on {lm.device} (vLLM: {lm.fast_inference}) ready after "
        f"{time.time() - started:.0f} s")
    summary: dict[str, Any] = {"name": cfg.name, "model": cfg.model.name, "device": lm.device,
                               "precision": precision.as_dict(), "backend": cfg.backend,
                               "processes": world_size()}

    priming_adapter = out / "priming" / "adapter"
    priming_made_by = stage_cache.priming_settings(cfg, stage_cache.model_dtype(lm.model, cfg.model.dtype), data.scale)
    priming_why = stage_cache.mismatch(priming_adapter, priming_made_by)
    priming_done = priming_why is None
    if cfg.priming.enabled and not priming_done and ckpt is not None:
        raise ConfigError(f"{ckpt} continues a format priming that does not match this config "
                          f"({priming_adapter}: {priming_why}): "
                          "resume with the settings it was made with, or start afresh with output_dir=NEW_DIR")
    examples = priming_dataset(cfg, lm, data) if cfg.priming.enabled and not priming_done else None
    if examples is not None and examples.selection.get("keep") == "correct":
        say(f"kit: SFT on the teacher's answers that state the truth: {examples.selection['kept']} kept of "
            f"{examples.selection['drawn']} drawn (rejection sampling, priming.keep=correct)")
    plan, figures, known = plan_run(cfg, lm, data, out, examples and examples.dataset, started, console, resume)
    for line in plan.describe():
        say(line)
    timeline = Timeline(plan, started)
    if is_main():
        atomic_write_json(out / "plan.json", {**plan.as_dict(), "measured": figures})
    summary["plan"] = {**plan.as_dict(), "measured": figures}
    frame = eval_frame(data, cfg, plan.sizes.eval_pairs) if cfg.evaluation.enabled else None

    def evaluate(name: str, known_answers: dict | None = None, pairs=None) -> dict | None:
        """A round on the main process (the others wait; None there)."""
        metrics = None
        if is_main():
            timeline.begin(f"eval_{name}")
            metrics = _evaluate(cfg, lm, data, out, name, frame if pairs is None else pairs, known_answers, console)
            timeline.end(f"eval_{name}")
        wait_for_everyone()
        return metrics

    if cfg.evaluation.enabled and cfg.evaluation.before_training:
        before = cfg.evaluation.before_samples
        summary["eval_before"] = evaluate("before", known, None if before is None
                                          else eval_frame(data, cfg, min(before, plan.sizes.eval_pairs)))

    if cfg.priming.enabled:
        if priming_done:
            reload_adapter_weights(lm.model, priming_adapter)  # a resumed checkpoint's weights replace these
            lm.adapter_dir = str(priming_adapter)
            say("kit: format priming already done with these settings, reusing it")
        else:
            if priming_adapter.exists():
                say(f"kit: note: {priming_adapter} is not reused ({priming_why}); recomputing")
            if is_main():
                stage_cache.forget(priming_adapter)
            steps = plan.sizes.priming_steps
            timeline.begin("priming")
            bar = console.bar("format priming", steps, "step")
            deadline = Deadline(timeline.deadline(plan.left_after("priming")), _floor(plan, "priming"))
            priming_callbacks = [trainer_progress(console, bar, "priming",
                                                  lambda: timeline.figures("priming", bar.n, steps)),
                                 deadline_callback(console, deadline, "format priming", steps)]
            summary["priming"] = run_priming(cfg, lm, data, out, steps if steps < plan.limits.priming_steps else -1,
                                             priming_callbacks, quiet=not console.verbose, examples=examples)
            bar.close()
            timeline.end("priming")
            if is_main():
                stage_cache.remember(priming_adapter, priming_made_by)
            lm.adapter_dir = str(priming_adapter)  # vLLM generation applies the saved LoRA per request
            say(f"kit: format priming: {summary['priming']['steps']} steps in "
                f"{format_duration(summary['priming']['seconds'])}, loss {summary['priming']['train_loss']:.3f}")
        if cfg.evaluation.enabled:
            summary["eval_primed"] = evaluate("primed")

    steps = timeline.replan_grpo(say)
    timeline.begin("grpo")
    bar = console.bar("GRPO", steps, "step", initial=int(ckpt.name.split("-")[-1]) if ckpt else 0)
    trainer, watch = grpo_trainer(cfg, lm, data, out, rewards, steps, callbacks, say=say, detail=console.detail)

    def grpo_figures() -> dict[str, str]:
        shown = timeline.figures("grpo", bar.n, steps)
        if watch.valid_share is not None:
            shown = {"valid": f"{watch.valid_share:.0%}", **shown}
        return shown

    trainer.add_callback(trainer_progress(console, bar, "grpo", grpo_figures))
    trainer.add_callback(deadline_callback(console, Deadline(timeline.deadline(plan.left_after("grpo")),
                                                             _floor(plan, "grpo")), "GRPO", steps))
    if not console.verbose:
        drop_default_bars(trainer)
    t1 = time.time()
    if ckpt:
        say(f"kit: GRPO resumes from {ckpt.name}")
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    bar.close()
    timeline.end("grpo")
    done = result.global_step - (int(ckpt.name.split("-")[-1]) if ckpt else 0)
    summary["grpo"] = {"steps": result.global_step, "planned_steps": steps, "seconds": round(time.time() - t1, 1),
                       "seconds_per_step": round((time.time() - t1) / max(1, done), 2)}
    say(f"kit: GRPO: {result.global_step} steps in {format_duration(summary['grpo']['seconds'])} "
        f"({summary['grpo']['seconds_per_step']:.1f} s per step)")

    seen = gather(sorted(watch.seen))  # every process takes part in this
    if len(seen) > 1:
        summary["prompts_per_process"] = [len(x) for x in seen]
        summary["prompts_in_several_processes"] = len(set.intersection(*map(set, seen)))
        say(f"kit: prompts trained on per process: {summary['prompts_per_process']} "
            f"({summary['prompts_in_several_processes']} seen by all)")
    if is_main():
        save_adapter(lm, out / "adapter")
    wait_for_everyone()
    lm.adapter_dir = str(out / "adapter")  # vLLM generation applies the saved LoRA per request
    nonzero, total = lora_nonzero(out / "adapter")
    summary["adapter"] = {"path": str(out / "adapter"), "lora_B_nonzero": nonzero, "lora_B_total": total}
    if nonzero == 0:
        say("kit: WARNING: every LoRA B matrix is zero: training did not move the adapter (reward spread was 0?)")

    if cfg.evaluation.enabled:
        summary["eval_after"] = evaluate("after")
    if not is_main():
        return summary
    if cfg.evaluation.enabled:
        summary.update(reference_summary(data, frame, out, cfg.seed, [k for k in ("eval_before", "eval_primed")
                                                                       if summary.get(k)]))
    summary["stages_s"] = timeline.actual
    summary["seconds_total"] = round(time.time() - started, 1)
    if cfg.budget.minutes:
        summary["budget_s"] = cfg.budget.minutes * 60
    atomic_write_json(out / "summary.json", summary)
    _ending(cfg, summary, out, console, figures)
    return summary


def _floor(plan: Plan, stage: str) -> int:
    """The fewest steps the deadline may cut a stage to (the budget's floors)."""
    planned = plan.sizes.grpo_steps if stage == "grpo" else plan.sizes.priming_steps
    if plan.floors is None:
        return planned
    return min(planned, plan.floors.grpo_steps if stage == "grpo" else plan.floors.priming_steps)


def _ending(cfg: KitConfig, summary: dict, out: Path, console: Console, figures: dict) -> None:
    """The table, the verdict, where the files are, what to run next (and, on a random model, that
    the install works)."""
    from kit.ending import install_ok_line, next_steps, next_test_pairs, verdict

    say = console.say
    say(format_summary(summary))
    total = summary["seconds_total"]
    budget = summary.get("budget_s")
    say(f"kit: finished in {format_duration(total)}" +
        (f" (budget {format_duration(budget)}{'' if total <= budget else ', OVER it'})" if budget else ""))
    ok = install_ok_line(cfg.model.name)
    if ok:
        say(ok)
    else:
        say("")
        say(verdict(summary))
    per_pair = figures.get("per_pair_s")
    pairs = next_test_pairs(cfg.data.eval_split, cfg.evaluation.samples)
    for line in next_steps(out, summary["device"] == "cuda", per_pair, pairs):
        say(line)
    if console.library_warnings:
        say(f"kit: {console.library_warnings} library warning(s) went to {out / 'train.log'} (--verbose shows them)")


TESTED_BASELINES = ("item earlier average", "matrix factorisation (SVD)")


def reference_summary(data, frame, out: Path, seed: int, rounds: list[str]) -> dict:
    """Baselines and the noise floor on the evaluation pairs, and the paired tests the verdict
    rests on (kit.report): after GRPO against each earlier round, and each trained round (after
    SFT, after GRPO) against the item's earlier average, matrix factorisation (SVD) and the best
    baseline. A round scored on fewer pairs (the base model) is compared on the pairs it has.
    SVD needs scikit-surprise; without it (a bare GPU machine) the averages stand alone."""
    import importlib.util

    from kit.report import ROUND_LABELS, best_baseline, compare, pair_errors, public_metrics, reference_rows

    refs = reference_rows(data, frame, seed, fitted=importlib.util.find_spec("surprise") is not None)
    keys = list(zip(frame["user_id"].to_list(), frame["item_id"].to_list()))

    def errors(stage: str) -> dict:
        return pair_errors(read_jsonl(out / f"predictions_{stage.removeprefix('eval_')}.jsonl"), data.scale)

    def paired(a: str, ea: dict, b: str, eb: dict) -> dict:
        common = [k for k in keys if k in ea and k in eb]
        return compare(a, [ea[k] for k in common], b, [eb[k] for k in common], seed).as_dict()

    found = {stage: errors(stage) for stage in [*rounds, "eval_after"]}
    after = ROUND_LABELS["eval_after"]
    comparisons = [paired(after, found["eval_after"], ROUND_LABELS[k], found[k]) for k in rounds]
    best = best_baseline(refs)
    tested = [b for b in (*TESTED_BASELINES, best) if b in refs.errors]
    for stage in [s for s in ("eval_primed", "eval_after") if s in found]:
        for name in dict.fromkeys(tested):
            comparisons.append(paired(ROUND_LABELS[stage], found[stage], f"baseline: {name}",
                                      dict(zip(keys, refs.errors[name]))))
    result = {"baselines": {k: public_metrics(v) for k, v in refs.metrics.items()}, "comparisons": comparisons}
    if refs.noise_floor:
        result["noise_floor"] = refs.noise_floor
    return result


def format_summary(summary: dict) -> str:
    """Before/after table, measured the same way, with the baselines and the noise floor."""
    from kit.report import ROUND_LABELS, decoding_line, summary_table

    models = {label: summary[key] for key, label in ROUND_LABELS.items() if summary.get(key)}
    lines = [summary_table(models, summary.get("baselines", {}), summary.get("noise_floor"))]
    last = list(models)[-1] if models else None
    line = decoding_line(last, models[last]) if last else None
    return "\n" + "\n".join(lines + ([line] if line else []))


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
        if cfg.priming.traces:
            try:
                n = min(cfg.priming.samples, len(checked_traces(cfg, data)))
            except ConfigError as exc:
                return False, f"kit: error: {exc}"
        else:
            n = min(cfg.priming.samples, len(data.splits["train"]))
        p = cfg.priming
        steps = priming_steps(n, p.batch_size, p.gradient_accumulation_steps, p.epochs)
        parts.append(f"priming {steps} SFT steps on {n} {'traces' if p.traces else 'answers'}")
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
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="print everything (library logs, the trainers' log dictionaries and bars), not only "
                         "one bar per stage; the full log is always in OUTPUT_DIR/train.log")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. grpo.max_steps=10 output_dir=runs/x")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = None
    try:  # a mistyped key is reported before anything heavy is imported
        check_overrides(args.overrides)
        if args.config is not None:
            cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    from kit.versions import check_versions

    from kit.backend import requested_backend, select_backend

    try:  # unsloth before trl/transformers/peft when it is the backend, once the config is known good
        select_backend(cfg.backend if cfg is not None else requested_backend())
    except ConfigError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2

    check_versions(warn=lambda m: print(m, file=sys.stderr))
    recipe = args.config
    if recipe is None:
        from kit.model import has_gpu

        recipe = DEFAULT_GPU_RECIPE if has_gpu() else DEFAULT_CPU_RECIPE
        print(f"kit: no --config given; {'a GPU was found' if has_gpu() else 'no GPU found'}, "
              f"running templates/recipes/{recipe}.yaml")
    try:
        cfg = cfg or load_config(recipe, args.overrides)
        if args.validate:
            load_recipe_rewards(cfg.rewards)
            print(dump_config(cfg), end="")
            ok, verdict = validation_verdict(cfg, cfg.name)
            print(verdict, file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 2
        run(cfg, resume=args.resume, verbose=args.verbose, started=STARTED)
    except (ConfigError, RewardError) as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
