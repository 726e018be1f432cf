"""Cold-start reasoning traces for RecOne: a teacher answers the training prompts, and only
the answers that are right are kept.

    python -m kit.traces --config RECIPE --out traces.jsonl --teacher openai --base-url URL --model NAME
    python -m kit.traces --config RECIPE --out traces.jsonl --teacher local [--adapter DIR]
    python -m kit.traces validate FILE [--config RECIPE]

An answer is kept when it passes the `format` reward's check and states the true rating
(rounded as the data's ratings are). A prompt whose answers all miss is asked once more with
the true rating revealed (rationalisation); that answer is kept under the same check. The
stored prompt is always the one the student sees, never the one with the rating in it.
Kept traces are appended as they come; a stopped run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence

from kit.io import append_jsonl, atomic_write_json, read_jsonl
from kit.rewards import STYLES, completion_text, parse_answer

SOURCES = ("teacher", "rationalised", "self")
REJECT_REASONS = ("malformed", "wrong_rating", "error")
# Opens the rationalisation hint; a stored prompt that holds it leaks the answer.
REVEAL_MARKER = "Note for the writer of this answer only:"


class TraceError(ValueError):
    """Bad traces, a teacher that cannot be used, or bad options; the message says the fix."""


# --------------------------------------------------------------------------- the rule

def rating_step(ratings: Iterable[float]) -> Optional[float]:
    """How the data's ratings are rounded: 1 (whole stars), 0.5 (half stars), or None (any value)."""
    values = [float(r) for r in ratings]
    for step in (1.0, 0.5):
        if values and all(abs(v / step - round(v / step)) < 1e-9 for v in values):
            return step
    return None


def data_rating_step(data) -> Optional[float]:
    """The rounding of a data set's ratings, read from its training split."""
    return rating_step(data.splits["train"]["rating"].to_list())


def pair_key(user_id: Any, item_id: Any) -> str:
    """One prompt's identity in the traces and the ledger (what resume matches on)."""
    return f"{user_id}\t{item_id}"


def rounded(value: float, step: Optional[float]) -> float:
    return value if step is None else round(value / step) * step


def judge(answer: Any, truth: float, scale: tuple[float, float], style: str, step: Optional[float]) -> str:
    """'ok', 'malformed' (fails the format reward's check) or 'wrong_rating'."""
    parsed = parse_answer(answer, scale, style)
    if not parsed.valid:
        return "malformed"
    return "ok" if abs(rounded(parsed.rating, step) - float(truth)) < 1e-9 else "wrong_rating"


def revealed(messages: list[dict], rating: float, style: str) -> list[dict]:
    """The prompt with the true rating revealed to the teacher (never stored)."""
    tag = STYLES[style][-1]
    hint = (f"\n\n{REVEAL_MARKER} this user's actual rating of the item is {rating:g}. Write the analysis "
            f"that a careful recommender would write from the information above and that leads to this rating, "
            f"without saying that you were told it, and end with <{tag}>{rating:g}</{tag}>.")
    out = [dict(m) for m in messages]
    out[-1]["content"] = str(out[-1]["content"]) + hint
    return out


def check_trace(record: Any, scale: tuple[float, float], style: str, step: Optional[float]) -> list[str]:
    """What is wrong with one trace line (empty when it is good): the fields, the format rule,
    the stated rating against `rating`, and no revealed rating in the prompt."""
    if not isinstance(record, dict):
        return ["a line must be a JSON object with prompt, completion and rating"]
    problems = []
    prompt = record.get("prompt")
    if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and "content" in m
                                                        for m in prompt)):
        problems.append("prompt: must be a non-empty list of chat messages {role, content}")
    elif any(REVEAL_MARKER in str(m["content"]) for m in prompt):
        problems.append("prompt: holds the revealed rating (the rationalisation hint); store the student's prompt")
    elif prompt[-1]["role"] != "user":
        problems.append(f"prompt: its last message must be the user's (is '{prompt[-1]['role']}')")
    completion = record.get("completion")
    if not isinstance(completion, (str, list)) or not completion_text(completion).strip():
        problems.append("completion: must be the answer text (or a list with the assistant's message)")
    rating = record.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating):
        problems.append(f"rating: must be the true rating, a number (got {rating!r})")
    elif not scale[0] <= rating <= scale[1]:
        problems.append(f"rating: {rating:g} is outside the data's scale {scale[0]:g}-{scale[1]:g}")
    source = record.get("source")
    if source is not None and source not in SOURCES:
        problems.append(f"source: '{source}' is not one of {', '.join(SOURCES)}")
    if problems:
        return problems
    parsed = parse_answer(completion, scale, style)
    if not parsed.valid:
        return [f"completion: fails the format rule ({parsed.problems[0]})"]
    if judge(completion, rating, scale, style, step) != "ok":
        return [f"completion: states {parsed.rating:g}, but the true rating is {rating:g}"]
    return []


def read_traces(path: Path | str, scale: tuple[float, float], style: str, step: Optional[float] = 1.0) -> list[dict]:
    """Every line of a traces file, checked; the first bad line stops with its number and the fix."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path} not found: make traces with python -m kit.traces --config RECIPE --out {path} "
                         "--teacher local|openai")
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}:{number}: not JSON ({exc.msg}); check it with "
                                 f"python -m kit.traces validate {path}") from None
            problems = check_trace(record, scale, style, step)
            if problems:
                raise TraceError(f"{path}:{number}: {problems[0]}; check the whole file with "
                                 f"python -m kit.traces validate {path}")
            records.append(record)
    if not records:
        raise TraceError(f"{path} holds no trace: make some with python -m kit.traces")
    return records


def as_messages(completion: Any) -> list[dict]:
    """A stored completion as the assistant's turn, whether stored as text or as messages."""
    return [{"role": "assistant", "content": completion_text(completion)}]


# --------------------------------------------------------------------------- teachers

class Teacher(Protocol):
    source: str

    def answer(self, prompts: Sequence[list[dict]], n: int) -> list[list[Any]]:
        """`n` answers per prompt: text, or the exception that stopped a request."""


@dataclass
class OpenAITeacher:
    """Any OpenAI-compatible chat endpoint. The key is read from OPENAI_API_KEY (a local server
    needs none) and is never written anywhere; 429s, 5xx and timeouts are retried with backoff
    (the client's own), up to `retries` times."""

    base_url: str
    model: str
    temperature: float = 0.8
    max_tokens: int = 512
    concurrency: int = 4
    retries: int = 5
    timeout: float = 120.0
    source: str = "teacher"

    def __post_init__(self) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none",
                             max_retries=self.retries, timeout=self.timeout)

    def _one(self, messages: list[dict]) -> Any:
        import openai

        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages,
                                                        temperature=self.temperature, max_tokens=self.max_tokens)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TraceError(f"{self.base_url} refused the key ({exc.status_code}): set OPENAI_API_KEY "
                             "to a key this endpoint accepts") from None
        except openai.NotFoundError:
            raise TraceError(f"{self.base_url}/chat/completions or model '{self.model}' was not found (404): the "
                             "base URL usually ends in /v1, and --model must be a name the server serves") from None
        except openai.APIError as exc:
            return RuntimeError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        content = reply.choices[0].message.content if reply.choices else None
        return content if content is not None else RuntimeError("the reply held no message content")

    def answer(self, prompts: Sequence[list[dict]], n: int) -> list[list[Any]]:
        jobs = [p for p in prompts for _ in range(n)]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            flat = list(pool.map(self._one, jobs))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


@dataclass
class LocalTeacher:
    """The kit's own loaded model (the base, or a saved adapter on it): `n` sampled answers per
    prompt, the paper's rejection sampling for self-distillation."""

    loaded: Any
    temperature: float = 0.8
    max_tokens: int = 256
    batch_size: int = 8
    seed: int = 0
    style: str = "reczero"
    source: str = "self"

    def answer(self, prompts: Sequence[list[dict]], n: int) -> list[list[Any]]:
        from kit.model import generate
        from kit.prompts import render_chat

        texts = [render_chat(self.loaded.tokenizer, m) for m in prompts]
        self.seed += 1  # a fresh draw for every call (a rationalisation is not a repeat of the first ask)
        out = generate(self.loaded, texts, max_new_tokens=self.max_tokens, temperature=self.temperature,
                       batch_size=self.batch_size, seed=self.seed, n=n, progress=False,
                       stop=(f"</{STYLES[self.style][-1]}>",))
        return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


# --------------------------------------------------------------------------- one pass

@dataclass
class Ask:
    """One training prompt: what the student sees and the truth."""

    key: str
    messages: list[dict]
    rating: float
    user_id: str
    item_id: str


@dataclass
class Outcome:
    ask: Ask
    answers: list[dict] = field(default_factory=list)  # {reason, rating, stage}
    kept: Optional[dict] = None
    outcome: str = "rejected"

    def ledger(self) -> dict:
        first = self.answers[0] if self.answers else {}
        return {"key": self.ask.key, "user_id": self.ask.user_id, "item_id": self.ask.item_id,
                "rating": self.ask.rating, "outcome": self.outcome, "answers": self.answers,
                "first_rating": first.get("rating") if first.get("reason") in ("ok", "wrong_rating") else None}


def answer_only(text: Any, style: str) -> str:
    """The answer up to its final closing tag: what a teacher wrote after it (the format rule
    allows it, the prompt asks for none) is not taught to the student."""
    text, end = completion_text(text), f"</{STYLES[style][-1]}>"
    cut = text.rfind(end)
    return (text[:cut + len(end)] if cut >= 0 else text).strip()


def _record(ask: Ask, text: str, source: str, style: str) -> dict:
    return {"prompt": ask.messages, "completion": answer_only(text, style), "rating": ask.rating,
            "user_id": ask.user_id, "item_id": ask.item_id, "source": source}


def _judged(answer: Any, ask: Ask, scale, style, step, stage: str) -> dict:
    if isinstance(answer, Exception):
        return {"stage": stage, "reason": "error", "rating": None, "error": str(answer)[:300]}
    reason = judge(answer, ask.rating, scale, style, step)
    return {"stage": stage, "reason": reason, "rating": parse_answer(answer, scale, style).rating}


def ask_teacher(teacher: Teacher, asks: list[Ask], samples: int, scale: tuple[float, float], style: str,
                step: Optional[float], rationalise: bool = True) -> list[Outcome]:
    """Ask each prompt `samples` times and keep the first right answer; prompts whose answers
    all miss (none errored) are asked once with the rating revealed."""
    results = [Outcome(a) for a in asks]
    for outcome, answers in zip(results, teacher.answer([a.messages for a in asks], samples)):
        for answer in answers:
            judged = _judged(answer, outcome.ask, scale, style, step, "first")
            outcome.answers.append(judged)
            if judged["reason"] == "ok" and outcome.kept is None:
                outcome.kept, outcome.outcome = _record(outcome.ask, answer, teacher.source, style), "kept"
    missed = [o for o in results if o.kept is None]
    for o in missed:
        if all(a["reason"] == "error" for a in o.answers):
            o.outcome = "error"  # asked again on resume
    again = [o for o in missed if o.outcome != "error"] if rationalise else []
    if again:
        hinted = [revealed(o.ask.messages, o.ask.rating, style) for o in again]
        for o, answers in zip(again, teacher.answer(hinted, 1)):
            judged = _judged(answers[0], o.ask, scale, style, step, "rationalised")
            o.answers.append(judged)
            if judged["reason"] == "ok":
                o.kept, o.outcome = _record(o.ask, answers[0], "rationalised", style), "rationalised"
    return results


# --------------------------------------------------------------------------- files

@dataclass
class TraceFiles:
    """traces.jsonl (kept traces), traces.asked.jsonl (one line per prompt finished: what the
    resume skips and what the summary counts), traces.summary.json."""

    out: Path

    @property
    def ledger(self) -> Path:
        return self.out.with_name(self.out.stem + ".asked.jsonl")

    @property
    def summary(self) -> Path:
        return self.out.with_name(self.out.stem + ".summary.json")

    def done_keys(self) -> set[str]:
        done = {r["key"] for r in read_jsonl(self.ledger) if r.get("outcome") != "error"} if self.ledger.is_file() else set()
        if self.out.is_file():  # a trace written just before a stop, without its ledger line
            done |= {pair_key(r.get("user_id"), r.get("item_id")) for r in read_jsonl(self.out)}
        return done

    def write(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.kept is not None:
                append_jsonl(self.out, o.kept)
        for o in outcomes:
            append_jsonl(self.ledger, o.ledger())


def summarise(ledger: list[dict], settings: dict) -> dict:
    """Counts over the latest line of each prompt: asked / kept / rationalised / rejected, the
    answers rejected by reason, and the teacher's MAE on its first answers (parsable ones)."""
    latest = {r["key"]: r for r in ledger}
    records = list(latest.values())
    outcomes = {k: sum(r["outcome"] == k for r in records) for k in ("kept", "rationalised", "rejected", "error")}
    answers = [a for r in records for a in r["answers"]]
    by_reason = {k: sum(a["reason"] == k for a in answers) for k in REJECT_REASONS}
    firsts = [(r["first_rating"], r["rating"]) for r in records if r.get("first_rating") is not None]
    asked = len(records) - outcomes["error"]
    return {
        "asked": asked, "kept": outcomes["kept"], "rationalised": outcomes["rationalised"],
        "rejected": outcomes["rejected"], "unanswered": outcomes["error"],
        "traces": outcomes["kept"] + outcomes["rationalised"],
        "answers": len(answers), "answers_rejected": by_reason,
        "teacher_first_answers": {
            "n": len(records), "valid": len(firsts),
            "mae": round(sum(abs(p - t) for p, t in firsts) / len(firsts), 4) if firsts else None,
            "exact": sum(abs(p - t) < 1e-9 for p, t in firsts)},
        "settings": settings,
    }


# --------------------------------------------------------------------------- a run

def training_asks(cfg, data, tokenizer, limit: Optional[int]) -> tuple[list[Ask], int]:
    """The recipe's training prompts (the ones GRPO draws from) in a seeded order, the first
    `limit`; prompts over prompt.max_prompt_tokens are left out and counted."""
    from kit.data import to_prompt_dataset

    frame = data.split("train", cfg.data.max_train, seed=cfg.seed, seeded_order=True)
    if limit is not None:
        frame = frame[:limit]
    ds, too_long = to_prompt_dataset(frame, data, cfg, tokenizer)
    return [Ask(pair_key(r["user_id"], r["item_id"]), r["prompt"], float(r["rating"]), str(r["user_id"]),
                str(r["item_id"])) for r in ds], too_long


def make_traces(cfg, data, teacher: Teacher, out: Path | str, tokenizer, limit: Optional[int] = None,
                samples: int = 1, chunk: int = 8, rationalise: bool = True, settings: Optional[dict] = None,
                progress: bool = True, log: Callable[[str], Any] = print) -> dict:
    """Ask the teacher for traces of the recipe's training prompts, `chunk` prompts at a time;
    each chunk's kept traces and ledger lines are appended before the next starts, and a rerun
    skips the prompts already finished. Returns the summary (also written beside `out`)."""
    from tqdm.auto import tqdm

    files = TraceFiles(Path(out))
    files.out.parent.mkdir(parents=True, exist_ok=True)
    style, scale = cfg.prompt.style, data.scale
    step = data_rating_step(data)
    settings = {**(settings or {}), "recipe": cfg.name, "samples": samples, "rationalise": rationalise,
                "scale": list(scale), "rating_step": step, "style": style}
    if files.summary.is_file():
        before = json.loads(files.summary.read_text()).get("settings", {})
        changed = sorted(k for k in settings if k in before and before[k] != settings[k])
        if changed:
            log(f"kit: note: {files.out} was started with other settings ({', '.join(changed)}); "
                "its traces are kept and new ones appended")
    asks, too_long = training_asks(cfg, data, tokenizer, limit)
    done = files.done_keys()
    todo = [a for a in asks if a.key not in done]
    if too_long:
        log(f"kit: {too_long} prompts longer than prompt.max_prompt_tokens={cfg.prompt.max_prompt_tokens} are left out")
    if len(todo) < len(asks):
        log(f"kit: resuming: {len(asks) - len(todo)} of {len(asks)} prompts already answered in {files.ledger}")
    t0 = time.time()
    bar = tqdm(total=len(asks), initial=len(asks) - len(todo), desc="traces", unit="prompt", disable=not progress)
    counts = {"kept": 0, "rationalised": 0, "rejected": 0, "error": 0}
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        outcomes = ask_teacher(teacher, batch, samples, scale, style, step, rationalise)
        files.write(outcomes)
        for o in outcomes:
            counts[o.outcome] += 1
        bar.update(len(batch))
        bar.set_postfix(counts, refresh=False)
        if all(o.outcome == "error" for o in outcomes):
            bar.close()
            first = next(a["error"] for o in outcomes for a in o.answers if a.get("error"))
            _write_summary(files, settings, t0)
            raise TraceError(f"every request of the last {len(batch)} prompts failed ({first}); what was "
                             f"finished is in {files.out}: fix the teacher and rerun the same command to resume")
    bar.close()
    return _write_summary(files, settings, t0)


def _write_summary(files: TraceFiles, settings: dict, t0: float) -> dict:
    summary = summarise(read_jsonl(files.ledger) if files.ledger.is_file() else [], settings)
    summary["seconds_this_run"] = round(time.time() - t0, 1)
    atomic_write_json(files.summary, summary)
    return summary


def summary_lines(summary: dict, out: Path | str) -> list[str]:
    s, first = summary, summary["teacher_first_answers"]
    rejected = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["answers_rejected"].items())
    mae = "n/a" if first["mae"] is None else f"{first['mae']:.3f}"
    return [f"kit: {s['traces']} traces kept of {s['asked']} prompts asked: {s['kept']} right at first, "
            f"{s['rationalised']} rationalised, {s['rejected']} rejected"
            + (f", {s['unanswered']} unanswered (rerun to retry)" if s["unanswered"] else ""),
            f"kit: answers rejected: {rejected} (of {s['answers']})",
            f"kit: teacher's first answers: {first['valid']}/{first['n']} parsable, MAE {mae}, "
            f"{first['exact']} exact",
            f"kit: traces in {out}; counts in {TraceFiles(Path(out)).summary}"]


# --------------------------------------------------------------------------- CLI

def _validate_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m kit.traces validate",
                                 description="Check every line of a traces file with the rules kit.traces keeps by.")
    ap.add_argument("file")
    ap.add_argument("--config", "-c", help="the recipe the traces are for (its data give the scale and rounding)")
    ap.add_argument("--scale", default=None, help="the rating scale without a recipe, e.g. 1,5 (default 1,5)")
    ap.add_argument("--style", default=None, choices=sorted(STYLES), help="the answer format (default reczero)")
    args = ap.parse_args(argv)
    path = Path(args.file)
    if not path.is_file():
        print(f"kit: error: {path} not found", file=sys.stderr)
        return 2
    scale, style, step = (1.0, 5.0), "reczero", 1.0
    if args.config:
        from kit.config import load_config
        from kit.data import load_task_data

        cfg = load_config(args.config)
        data = load_task_data(cfg)
        scale, style, step = data.scale, cfg.prompt.style, data_rating_step(data)
    if args.scale:
        from kit.config import _pair_of_numbers

        scale = tuple(_pair_of_numbers(args.scale))
    style = args.style or style
    bad, good = [], 0
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                problems = check_trace(json.loads(line), scale, style, step)
            except json.JSONDecodeError as exc:
                problems = [f"not JSON ({exc.msg})"]
            if problems:
                bad.append(f"{path}:{number}: " + "; ".join(problems))
            else:
                good += 1
    for line in bad[:50]:
        print(line)
    if len(bad) > 50:
        print(f"... and {len(bad) - 50} more bad lines")
    print(f"kit: {good} good, {len(bad)} bad lines in {path} (scale {scale[0]:g}-{scale[1]:g}, style {style})")
    return 1 if bad or not good else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m kit.traces", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="python -m kit.traces validate FILE checks a traces file you already have.")
    ap.add_argument("--config", "-c", required=True, help="recipe: its data and prompts are what the traces answer")
    ap.add_argument("--out", "-o", required=True, help="the traces JSONL to write (appended to; a rerun resumes)")
    ap.add_argument("--teacher", required=True, choices=["openai", "local"],
                    help="openai: any OpenAI-compatible chat endpoint; local: the kit's own model")
    ap.add_argument("--base-url", help="openai: the endpoint, e.g. http://localhost:8000/v1 (key: OPENAI_API_KEY)")
    ap.add_argument("--model", help="openai: the model name the endpoint serves")
    ap.add_argument("--adapter", help="local: a saved LoRA adapter on the recipe's model (default: the base)")
    ap.add_argument("--limit", type=int, help="at most this many training prompts (a seeded pick)")
    ap.add_argument("--samples", type=int, default=1, help="answers per prompt; the first right one is kept")
    ap.add_argument("--concurrency", type=int, default=4, help="openai: requests in flight at once")
    ap.add_argument("--retries", type=int, default=5, help="openai: retries of a 429, 5xx or timeout, with backoff")
    ap.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request")
    ap.add_argument("--temperature", type=float, default=None, help="default: grpo.temperature of the recipe")
    ap.add_argument("--max-tokens", type=int, default=None, help="default: the recipe's evaluation.max_new_tokens")
    ap.add_argument("--no-rationalise", action="store_true", help="do not re-ask missed prompts with the rating revealed")
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides, e.g. data.max_train=200")
    args = ap.parse_args(argv)
    if args.teacher == "openai" and not (args.base_url and args.model):
        ap.error("--teacher openai needs --base-url URL and --model NAME")
    if args.teacher == "local" and (args.base_url or args.model):
        ap.error("--base-url and --model are for --teacher openai; --teacher local uses the recipe's model.name")
    if args.samples < 1 or (args.limit is not None and args.limit < 1) or args.concurrency < 1:
        ap.error("--samples, --limit and --concurrency take numbers of 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["validate"]:
        return _validate_main(argv[1:])
    args = parse_args(argv)
    from kit.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
            raise TraceError(f"--adapter {args.adapter}: no LoRA adapter there (adapter_config.json is missing)")
        from kit.backend import select_backend

        select_backend(cfg.backend)  # unsloth before trl/transformers/peft when it is the backend
        from kit.data import load_task_data

        data = load_task_data(cfg)
        temperature = cfg.grpo.temperature if args.temperature is None else args.temperature
        max_tokens = args.max_tokens or cfg.evaluation.max_new_tokens
        if args.teacher == "openai":
            from transformers import AutoTokenizer

            from kit.model_sources import resolve_model_source

            tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(cfg.model.name))
            teacher: Teacher = OpenAITeacher(args.base_url, args.model, temperature, max_tokens, args.concurrency,
                                             args.retries, args.timeout)
            settings = {"teacher": "openai", "base_url": args.base_url, "model": args.model}
            chunk = max(8, args.concurrency)
        else:
            from kit.model import load_adapter

            loaded = load_adapter(cfg.model, args.adapter)
            tokenizer = loaded.tokenizer
            teacher = LocalTeacher(loaded, temperature, max_tokens, cfg.evaluation.batch_size, cfg.seed,
                                   cfg.prompt.style)
            settings = {"teacher": "local", "model": cfg.model.name, "adapter": args.adapter}
            chunk = cfg.evaluation.batch_size
        settings.update(temperature=temperature, max_tokens=max_tokens)
        summary = make_traces(cfg, data, teacher, args.out, tokenizer, args.limit, args.samples, chunk,
                              not args.no_rationalise, settings)
    except (ConfigError, TraceError) as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(summary, args.out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
