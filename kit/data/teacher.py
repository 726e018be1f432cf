"""The synthetic catalog's teacher: reference answers whose reasoning decides their rating.

A reference answer may only use what its prompt shows, and its rating must follow from its own
text, or supervised training teaches the format plus the commonest rating and nothing else. So
the teacher reads the user's reviews as the prompt shows them, and:

1. `<analyze user>` lists the tastes those reviews state (the synthetic reviews state them in four
   fixed forms: "I always enjoy a good X read.", "X is rarely my thing.", "Loved that it was X.",
   "Too X for my taste.").
2. `<analyze item>` takes the target's aspects (its category, then its features, as the prompt
   writes them) one line each and decides each one locally: the review sentence that states a taste
   for it, quoted verbatim, marked `[pos]` or `[neg]` with its step, or "not in their reviews +0"
   (`- dark: "Too dark for my taste." [neg] -1`). The aspect comes first, so a left-to-right model
   names what it looks up before it says what it found.
3. `<match>` starts from the readers' average as the prompt shows it and walks the same aspects in
   the same order, adding each line's step (+0 included: a small model that has to pick out the
   non-zero lines drops some), one addition at a time, and ends with the sum rounded half up and
   kept inside the scale (`readers 3.8; Mystery +0 = 3.8; dark -1 = 2.8; twisty +0.5 = 3.3,
   rounded: 3`).
4. `<rate>` repeats that rounded number.

The rule (readers' average, +0.5 per liked aspect, -1 per disliked one, on 1-5; scaled with the
scale's width) is readable, not optimal: it ignores the user's bias and the generator's noise, so
it is often off by one. `rule_rating` gives its rating without writing the text; RecOne's rejection
sampling (`priming.keep: correct`) keeps the answers whose rating equals the truth.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from kit.prompts import clip
from kit.rewards import round_rating

LIKE, DISLIKE = 1, -1
_FORMS = [  # (pattern of one review sentence, polarity, whether it names several aspects joined by "and")
    (re.compile(r"I always enjoy a good (?P<a>.+?) read\."), LIKE, False),
    (re.compile(r"(?P<a>.+?) is rarely my thing\."), DISLIKE, False),
    (re.compile(r"Loved that it was (?P<a>.+?)\."), LIKE, True),
    (re.compile(r"Too (?P<a>.+?) for my taste\."), DISLIKE, True),
]
_SENTENCE = re.compile(r"(?<=\.)\s+")
NOT_STATED = "not in their reviews"


@dataclass(frozen=True)
class Stated:
    """A taste one of the user's reviews states: the aspect (lowercase), +1 / -1, the sentence."""

    aspect: str
    polarity: int
    quote: str


def stated_tastes(reviews: Sequence[str]) -> list[Stated]:
    """Every taste the reviews state, in the order they are read (oldest review first)."""
    found = []
    for review in reviews:
        for sentence in _SENTENCE.split(review or ""):
            for pattern, polarity, several in _FORMS:
                m = pattern.fullmatch(sentence.strip())
                if m:
                    names = m.group("a").split(" and ") if several else [m.group("a")]
                    found += [Stated(n.strip().lower(), polarity, sentence.strip()) for n in names]
                    break
    return found


def steps(scale: tuple[float, float]) -> dict[int, float]:
    """The rule's step per liked / disliked aspect: +0.5 / -1 on a 1-5 scale, stretched with the scale."""
    stretch = (scale[1] - scale[0]) / 4.0
    return {LIKE: round(0.5 * stretch, 1), DISLIKE: round(-1.0 * stretch, 1)}


def _num(x: float) -> str:
    return f"{x:.1f}"


def _step(x: float) -> str:
    return f"{x:+g}"


@dataclass
class Reasoned:
    """A reference answer and what it decided."""

    text: str
    rating: int
    verdicts: list[tuple[str, Stated | None]]  # each target aspect and the statement that decided it


def reasoned_answer(sample: Mapping, target_aspects: Sequence[str], scale: tuple[float, float],
                    review_chars: int = 400) -> Reasoned:
    """The teacher's four-tag answer for a sample (see the module doc). `target_aspects`: the
    target's category then its features, as the prompt shows them."""
    reviews = [clip(h.get("review") or "", review_chars) for h in sample["user_history"]]
    tastes = stated_tastes(reviews)
    latest: dict[str, Stated] = {t.aspect: t for t in tastes}  # the most recent statement of each taste
    likes = list(dict.fromkeys(t.aspect for t in tastes if t.polarity == LIKE))
    dislikes = list(dict.fromkeys(t.aspect for t in tastes if t.polarity == DISLIKE))
    step = steps(scale)
    readers = round(float(sample["item_avg"]), 1)  # as the prompt shows it
    lines, terms, verdicts = [], [], []
    for aspect in dict.fromkeys(target_aspects):
        said = latest.get(aspect.lower())
        verdicts.append((aspect, said))
        if said is None:
            lines.append(f"- {aspect}: {NOT_STATED} +0")
            terms.append((aspect, 0.0))
            continue
        tag = "[pos]" if said.polarity == LIKE else "[neg]"
        lines.append(f'- {aspect}: "{said.quote}" {tag} {_step(step[said.polarity])}')
        terms.append((aspect, step[said.polarity]))
    total, match = readers, [f"readers {_num(readers)}"]
    for aspect, delta in terms:
        total = round(total + delta, 1)
        match.append(f"{aspect} {_step(delta)} = {_num(total)}")
    rating = round_rating(total, scale)
    match[-1] += f", rounded: {rating}"
    user = (f"Likes: {', '.join(likes) or 'none stated'}. "
            f"Dislikes: {', '.join(dislikes) or 'none stated'}.")
    text = (f"<analyze user>{user}</analyze user>\n"
            f"<analyze item>" + "\n".join(lines) + "</analyze item>\n"
            f"<match>{'; '.join(match)}</match>\n"
            f"<rate>{rating}</rate>")
    return Reasoned(text, rating, verdicts)
