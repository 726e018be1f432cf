"""Answer parsing and rule-based rewards.

This module owns the ONE parser of a model answer: evaluation and the app reuse
`parse_answer` instead of parsing again. Rewards follow TRL's calling convention
`fn(completions, **kwargs)`; the true rating arrives as the dataset column
`rating`, the data's scale as `rating_min` / `rating_max` (no default: without them a
completion scores the reward's fallback, and each reward warns once saying so).

A reward never raises: whatever the text, it returns a float per completion.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

RewardFn = Callable[..., list[float]]

RECZERO_TAGS = ("analyze user", "analyze item", "match", "rate")
THINK_ANSWER_TAGS = ("think", "answer")
ANSWER_ONLY_TAGS = ("answer",)
STYLES: dict[str, tuple[str, ...]] = {
    "reczero": RECZERO_TAGS,
    "think_answer": THINK_ANSWER_TAGS,
    "answer_only": ANSWER_ONLY_TAGS,
}
MAX_CHARS = 200_000  # longer answers are judged on their head only (bounded cost)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass
class ParsedAnswer:
    """What an answer contains and what is wrong with it."""

    style: str
    sections: dict[str, str] = field(default_factory=dict)
    rating: float | None = None  # content of the LAST rating block, if it is a number
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not errors under the paper's rule (e.g. trailing text)
    checks_passed: int = 0
    checks_total: int = 1

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def graded(self) -> float:
        return self.checks_passed / self.checks_total


def completion_text(completion: Any) -> str:
    """Text of one completion, whether TRL passes a string or a list of chat messages."""
    if completion is None:
        return ""
    if isinstance(completion, bytes):
        return completion.decode("utf-8", errors="replace")
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
        if isinstance(content, list):  # multimodal-style content parts
            return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
        return str(content)
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role") == "assistant"]
        return completion_text(assistant[-1] if assistant else completion[-1])
    return str(completion)


def _parse_number(text: str) -> float | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _tag_positions(text: str, tag: str) -> tuple[list[int], list[int]]:
    opens = [m.start() for m in re.finditer(re.escape(f"<{tag}>"), text)]
    closes = [m.start() for m in re.finditer(re.escape(f"</{tag}>"), text)]
    return opens, closes


def parse_answer(text: Any, scale: tuple[float, float], style: str = "reczero") -> ParsedAnswer:
    """Parse an answer in one of the tagged styles.

    Valid (the paper's rule) means: every tag occurs exactly once, blocks are in order and
    non-empty, and the final block (the rating) is a plain number inside the scale. Text
    after the final block is allowed by that rule; it is noted and costs partial credit in
    `graded`. `rating` is the number in the LAST final block even when the answer is
    invalid (for diagnostics); scoring must check `valid` first.
    """
    tags = STYLES[style]
    text = completion_text(text)[:MAX_CHARS]
    out = ParsedAnswer(style=style)
    checks: list[tuple[bool, str]] = []
    spans: dict[str, tuple[int, int]] = {}
    for tag in tags:
        opens, closes = _tag_positions(text, tag)
        checks.append((len(opens) == 1, f"<{tag}> appears {len(opens)} times (needs exactly 1)"))
        checks.append((len(closes) == 1, f"</{tag}> appears {len(closes)} times (needs exactly 1)"))
        if opens and closes:
            start = opens[-1] + len(tag) + 2
            ends_after = [c for c in closes if c >= start]
            if ends_after:
                spans[tag] = (opens[-1], ends_after[0] + len(tag) + 3)
                out.sections[tag] = text[start:ends_after[0]].strip()
    for first, second in zip(tags, tags[1:]):
        ordered = first in spans and second in spans and spans[first][1] <= spans[second][0]
        checks.append((ordered, f"<{first}> block must close before <{second}> opens"))
    for tag in tags:
        checks.append((bool(out.sections.get(tag)), f"<{tag}> block is missing or empty"))
    last = tags[-1]
    # the prediction is the content of the last rating block
    opens, closes = _tag_positions(text, last)
    if opens:
        start = opens[-1] + len(last) + 2
        end = text.find(f"</{last}>", start)
        if end >= 0:
            out.rating = _parse_number(text[start:end])
    lo, hi = scale
    if out.rating is None:
        checks.append((False, f"<{last}> must hold only a number"))
    else:
        checks.append((lo <= out.rating <= hi, f"rating {out.rating:g} is outside the scale {lo:g}-{hi:g}"))
    out.problems = [msg for ok, msg in checks if not ok]  # the paper's rule: these decide validity
    # beyond the paper's rule, for partial credit and diagnostics only: nothing after the answer
    tail_ok = last in spans and not text[spans[last][1]:].strip()
    if not tail_ok:
        out.notes.append(f"text after </{last}>")
    checks.append((tail_ok, f"text after </{last}>"))
    out.checks_total = len(checks)
    out.checks_passed = sum(ok for ok, _ in checks)
    return out


def round_rating(value: float, scale: tuple[float, float]) -> int:
    """A score as a whole rating: half up (3.5 -> 4, unlike Python's round), then inside the scale."""
    return int(min(scale[1], max(scale[0], math.floor(value + 0.5 + 1e-9))))


def match_result(parsed: ParsedAnswer) -> float | None:
    """The number an answer's `<match>` block arrives at: its last number (None when it states none)."""
    found = _NUMBER.findall(parsed.sections.get("match", ""))
    if not found:
        return None
    value = float(found[-1])
    return value if math.isfinite(value) else None


def is_consistent(parsed: ParsedAnswer, scale: tuple[float, float]) -> bool | None:
    """Whether the rating follows from the answer's own reasoning: `<rate>` equals the number its
    `<match>` arrives at, as written or as a whole rating (half up, inside the scale). None when
    the answer is malformed or its match states no number (nothing to agree with)."""
    if not parsed.valid or parsed.rating is None:
        return None
    result = match_result(parsed)
    if result is None:
        return None
    return abs(parsed.rating - result) < 1e-9 or parsed.rating == round_rating(result, scale)


# --------------------------------------------------------------------------- helpers

def _column(kwargs: dict, name: str, n: int, default: Any) -> list:
    value = kwargs.get(name)
    if value is None:
        return [default] * n
    if isinstance(value, (list, tuple)):
        return list(value) + [default] * (n - len(value))
    return [value] * n


def _scales(kwargs: dict, n: int) -> list[tuple[float, float]]:
    """The data's scale per completion; a missing or broken one raises (the reward then scores
    its fallback): a rating is never checked against a scale the data did not give."""
    lows = _column(kwargs, "rating_min", n, None)
    highs = _column(kwargs, "rating_max", n, None)
    out = []
    for lo, hi in zip(lows, highs):
        lo_f, hi_f = float(lo), float(hi)
        if not lo_f < hi_f:
            raise ValueError(f"rating_min {lo_f:g} is not below rating_max {hi_f:g}")
        out.append((lo_f, hi_f))
    return out


def _safe(per_item: Callable[[Any, dict, int], float], fallback: float) -> RewardFn:
    """Turn a per-completion scorer into a TRL reward that never raises."""

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        try:
            items = list(completions)
        except Exception:
            return []
        _warn_without_scale(getattr(reward, "__name__", "reward"), kwargs, fallback)
        scores = []
        for i, completion in enumerate(items):
            try:
                value = float(per_item(completion, kwargs, i))
                scores.append(value if math.isfinite(value) else fallback)
            except Exception:
                scores.append(fallback)
        return scores

    return reward


_WARNED_WITHOUT_SCALE: set[str] = set()


def _warn_without_scale(name: str, kwargs: dict, fallback: float) -> None:
    """Said once per reward: called without the data's scale (someone's own TRL script, say),
    every answer would score the fallback with no word."""
    missing = [c for c in ("rating_min", "rating_max") if kwargs.get(c) is None]
    if missing and name not in _WARNED_WITHOUT_SCALE:
        _WARNED_WITHOUT_SCALE.add(name)
        warnings.warn(f"kit.rewards.{name}: called without the column(s) {', '.join(missing)}, so every answer "
                      f"scores {fallback:g}; add the data's scale to the dataset (e.g. rating_min=1, rating_max=5)",
                      stacklevel=3)


def _truth(kwargs: dict, i: int) -> float | None:
    truths = kwargs.get("rating")
    if truths is None:
        return None
    value = truths[i] if isinstance(truths, (list, tuple)) else truths
    value = float(value)
    return value if math.isfinite(value) else None


def _scale_at(kwargs: dict, i: int) -> tuple[float, float]:
    return _scales(kwargs, i + 1)[i]


def rating_score(pred: float, truth: float, scale: tuple[float, float]) -> float:
    """1 - |pred - truth| / (half the scale width): +1 exact, -1 at the far end (1-5: /2)."""
    half = (scale[1] - scale[0]) / 2.0
    return 1.0 - abs(pred - truth) / half


def _named(fn: RewardFn, name: str, doc: str) -> RewardFn:
    fn.__name__ = name  # TRL logs rewards/<__name__>/mean
    fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def _format_reward(style: str, name: str) -> RewardFn:
    def score(completion, kwargs, i):
        return 1.0 if parse_answer(completion, _scale_at(kwargs, i), style).valid else -1.0

    return _named(_safe(score, -1.0), name, f"+1 for a well-formed {style} answer, -1 otherwise (paper's rule).")


def _rating_reward(style: str, name: str) -> RewardFn:
    def score(completion, kwargs, i):
        scale = _scale_at(kwargs, i)
        parsed = parse_answer(completion, scale, style)
        truth = _truth(kwargs, i)
        if not parsed.valid or truth is None or parsed.rating is None:
            return 0.0  # never score a malformed answer with the truth
        return rating_score(parsed.rating, truth, scale)

    return _named(_safe(score, 0.0), name, f"1 - |pred - truth| / (scale width / 2) for a valid {style} answer, 0 otherwise.")


def _graded_format(completion, kwargs, i):
    return parse_answer(completion, _scale_at(kwargs, i), "reczero").graded


def _consistency(completion, kwargs, i):
    scale = _scale_at(kwargs, i)
    return 1.0 if is_consistent(parse_answer(completion, scale, "reczero"), scale) else 0.0


def exact_match(completions: Sequence[Any], *, hit: float = 2.0, miss: float = -1.5, **kwargs: Any) -> list[float]:
    """Ablation: `hit` when the valid prediction equals the truth, `miss` otherwise (a recipe
    sets both: {name: exact_match, kwargs: {hit: 2.0, miss: -1.5}})."""
    def score(completion, columns, i):
        parsed = parse_answer(completion, _scale_at(columns, i), "reczero")
        truth = _truth(columns, i)
        return hit if parsed.valid and truth is not None and abs(parsed.rating - truth) < 1e-6 else miss

    return _named(_safe(score, miss), "exact_match", "")(completions, **kwargs)


REWARDS: dict[str, RewardFn] = {
    "format": _format_reward("reczero", "format"),
    "rating": _rating_reward("reczero", "rating"),
    "graded_format": _named(_safe(_graded_format, 0.0), "graded_format",
                            "Fraction (0-1) of the format checks passed: partial credit for small models."),
    "exact_match": exact_match,
    "consistency": _named(_safe(_consistency, 0.0), "consistency",
                          "1 when <rate> follows from the number <match> arrives at (rounded half up), else 0."),
    "think_answer_format": _format_reward("think_answer", "think_answer_format"),
    "think_answer_rating": _rating_reward("think_answer", "think_answer_rating"),
    "answer_only_format": _format_reward("answer_only", "answer_only_format"),
    "answer_only_rating": _rating_reward("answer_only", "answer_only_rating"),
}


class RewardError(ValueError):
    """A reward named in a recipe cannot be loaded or has the wrong signature."""


def _load_callable(spec: str) -> Callable:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise RewardError(f"reward '{spec}': not a registered name ({', '.join(REWARDS)}) "
                          "nor 'pkg.module:function' / 'path/to/file.py:function'")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise RewardError(f"reward '{spec}': file {path} does not exist")
        mod_name = f"kit_user_reward_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise RewardError(f"reward '{spec}': importing {path} failed: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise RewardError(f"reward '{spec}': cannot import module '{target}': {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise RewardError(f"reward '{spec}': '{target}' has no attribute '{attr}'")
    return fn


def check_reward(fn: Callable, name: str) -> None:
    """Fail early, with the fix, on the classic custom-reward mistakes."""
    if not callable(fn):
        raise RewardError(f"reward '{name}' is not callable")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    kinds = {p.kind for p in params.values()}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        raise RewardError(f"reward '{name}' must accept **kwargs (TRL passes prompts, completion_ids, "
                          "trainer_state and every dataset column): def fn(completions, **kwargs)")
    if "completions" not in params and inspect.Parameter.VAR_POSITIONAL not in kinds:
        raise RewardError(f"reward '{name}' must take a 'completions' argument: def fn(completions, **kwargs)")
    probe = ["<analyze user>x</analyze user><analyze item>[pos] y</analyze item><match>z</match><rate>4</rate>",
             [{"role": "assistant", "content": "not an answer"}]]
    try:
        values = fn(completions=probe, prompts=["p", "p"], rating=[4.0, 2.0],
                    rating_min=[1.0, 1.0], rating_max=[5.0, 5.0])
    except Exception as exc:
        raise RewardError(f"reward '{name}' raised on a probe batch: {type(exc).__name__}: {exc}") from exc
    if not isinstance(values, (list, tuple)) or len(values) != len(probe):
        raise RewardError(f"reward '{name}' must return one float per completion (got {values!r} for 2)")
    for v in values:
        if v is not None and not isinstance(v, (int, float)):
            raise RewardError(f"reward '{name}' returned {type(v).__name__}, expected float or None")


def load_reward(spec: str, kwargs: dict[str, Any] | None = None) -> RewardFn:
    """A registered reward by name, or a user function by 'pkg.mod:fn' / 'file.py:fn', with the
    recipe's keyword arguments bound (each checked against the function's signature)."""
    fn = REWARDS.get(spec) or _load_callable(spec)
    if kwargs:
        fn = bind_reward_kwargs(fn, spec, kwargs)
    check_reward(fn, spec)
    return fn


def bind_reward_kwargs(fn: Callable, spec: str, kwargs: dict[str, Any]) -> RewardFn:
    """`fn` with the recipe's keyword arguments fixed. Each must be a named parameter of `fn`
    (what **kwargs alone would swallow is a typo, and dataset columns are not settings)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise RewardError(f"reward '{spec}': its signature cannot be read, so kwargs cannot be checked") from None
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and n != "completions"]
    for key in kwargs:
        if key not in named:
            import difflib

            close = difflib.get_close_matches(key, named, n=1)
            hint = f"did you mean '{close[0]}'?" if close else (
                f"it takes {', '.join(named)}" if named else "it takes no settings")
            raise RewardError(f"reward '{spec}': unknown kwarg '{key}' ({hint})")

    def bound(completions, **columns):
        return fn(completions, **{**columns, **kwargs})

    return _named(bound, getattr(fn, "__name__", spec), fn.__doc__ or "")


@dataclass
class RecipeReward:
    """One entry of a recipe's `rewards`: what training, completions.jsonl and the app all use."""

    name: str
    weight: float
    fn: RewardFn


def load_recipe_rewards(specs: Sequence[Any]) -> list[RecipeReward]:
    """The recipe's rewards (objects with .name, .weight, .kwargs), loaded and checked."""
    loaded = [(s, load_reward(s.name, getattr(s, "kwargs", None))) for s in specs]
    return [RecipeReward(fn.__name__, s.weight, fn) for s, fn in loaded]  # named as TRL logs them


def reward_breakdown(rewards: Sequence[RecipeReward], completion: Any, **columns: Any) -> dict[str, Any]:
    """Each reward's value for one completion, the weights, and the weighted total TRL optimises."""
    values = {r.name: float(r.fn([completion], **columns)[0]) for r in rewards}
    total = sum(r.weight * values[r.name] for r in rewards)
    return {"rewards": values, "weights": {r.name: r.weight for r in rewards}, "total": total}


def _grounding(completions: Sequence[Any], prompts: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    from kit.grounding import grounding  # it parses answers with this module

    return grounding(completions, prompts, **kwargs)


REWARDS["grounding"] = _named(_grounding, "grounding",
                              "Share (0-1) of the answer's claimed aspects and preferences found in its prompt.")
