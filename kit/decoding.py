"""Expected-rating decoding: the model's whole belief about the rating, not only its top token.

Once an answer has written its rating tag (`<rate>`), the next token's distribution over the
scale's ratings is read (one forward pass over prompt + answer up to the tag; with vLLM, one
generated token with its log-probabilities). The greedy rating is that distribution's mode;
the expected rating is sum(r x p(r)) / sum(p(r)), which can sit between two stars and so
lowers the error of a model that hesitates between them (the paper reports greedy only).

Declined, with the reason recorded, when a rating on the scale is not one token of the
tokenizer (a 1-10 scale where "10" is two tokens, half stars such as "4.5"): reading only the
first token's distribution there would misstate the belief.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from kit.rewards import STYLES


@dataclass(frozen=True)
class RatingTokens:
    """The token of each rating on the scale, or why expected decoding is declined."""

    ids: dict[float, int]
    declined: str | None = None


def rating_tokens(tokenizer: Any, scale: tuple[float, float]) -> RatingTokens:
    """Map each integer rating of the scale to its single token, as the model would write it
    right after the opening tag (no leading space)."""
    lo, hi = scale
    if lo != int(lo) or hi != int(hi):
        return RatingTokens({}, f"the scale {lo:g}-{hi:g} is not whole stars")
    ids: dict[float, int] = {}
    for r in range(int(lo), int(hi) + 1):
        pieces = tokenizer(str(r), add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            return RatingTokens({}, f"the rating {r} is {len(pieces)} tokens for this tokenizer (expected "
                                    "decoding needs one token per rating)")
        ids[float(r)] = pieces[0]
    if len(set(ids.values())) != len(ids):
        return RatingTokens({}, "two ratings share a token")
    return RatingTokens(ids)


def rating_prefix(answer: str, style: str) -> str | None:
    """The answer up to and including its last opening rating tag, or None without one."""
    tag = f"<{STYLES[style][-1]}>"
    at = answer.rfind(tag)
    return None if at < 0 else answer[:at + len(tag)]


def distribution(probs: Sequence[float], ratings: Sequence[float]) -> dict | None:
    """{'probs': {rating: p}, 'expected': E[r], 'mass': total probability on the ratings}, the
    probabilities renormalised over the scale; None when the model put no mass there."""
    mass = float(sum(probs))
    if mass <= 0:
        return None
    normed = [float(p) / mass for p in probs]
    return {"probs": {f"{r:g}": round(p, 6) for r, p in zip(ratings, normed)},
            "expected": sum(r * p for r, p in zip(ratings, normed)), "mass": round(mass, 6)}


def expected_ratings(loaded: Any, prompts: Sequence[str], answers: Sequence[str], scale: tuple[float, float],
                     style: str, batch_size: int = 8) -> tuple[list[dict | None], str | None]:
    """Per answer, its rating distribution (None when it wrote no rating tag or the prompt was not
    sent); and the reason when expected decoding is declined for this tokenizer and scale."""
    from kit.model import next_token_probs

    tokens = rating_tokens(loaded.tokenizer, scale)
    if tokens.declined:
        return [None] * len(answers), tokens.declined
    prefixes = [rating_prefix(a, style) if p is not None else None for p, a in zip(prompts, answers)]
    asked = [k for k, pre in enumerate(prefixes) if pre is not None]
    out: list[dict | None] = [None] * len(answers)
    if not asked:
        return out, None
    ratings = list(tokens.ids)
    probs = next_token_probs(loaded, [prompts[k] + prefixes[k] for k in asked], list(tokens.ids.values()),
                             batch_size=batch_size)
    for k, p in zip(asked, probs):
        out[k] = distribution(p, ratings)
    return out, None
