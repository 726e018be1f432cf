"""Grounded reasons: how many of the things an answer claims can be found in what it was shown.

The point of the method is an explanation a person can check. An answer's claims are:
- each `[pos]` / `[neg]` line of its item analysis, up to the first comma, semicolon or full
  stop (the aspect; what follows is usually the reason it gives), or, in a line that names the
  aspect first (`dark: "Too dark for my taste." [neg] -1`), the text before the colon;
- each quotation ("...") in such a line: the evidence the answer cites, and
- each phrase of its user analysis (split at commas, semicolons, full stops and new lines; a
  label such as "Enjoyed:" is dropped).
A line that claims nothing ("[pos] nothing they clearly enjoyed", "none") is not counted.

**Matching rule** (documented, deterministic, no second model): text is lowercased, split into
words of letters and digits, stop words and words under 3 characters are dropped, and a final
"s" is removed from words over 3 characters (so "twists" matches "twist"). A claim is
*supported* when at least two thirds of its remaining words occur in the prompt the model was
shown (the item's title, description and reviews, the user's own reviews and ratings). A claim
with no remaining word (only stop words, or only numbers) is not counted. A quotation is supported
only when the prompt holds it word for word (lowercased, spacing collapsed) and it mentions the
aspect it is cited for: a cited sentence the user never wrote is a fabrication even when its words
occur elsewhere, and a real sentence about something else is no evidence for this aspect.

`grounding` is also a reward (`{name: grounding}` in a recipe): the supported share of an
answer's claims, 0 when it makes none (an answer that names nothing earns nothing here).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from kit.rewards import completion_text, parse_answer

SUPPORT = 2 / 3
_WORD = re.compile(r"[a-z0-9]+")
_SPLIT = re.compile(r"[,;.\n]")
_EMPTY = ("nothing", "none", "no ", "n/a", "unknown")
_QUOTE = re.compile(r'"([^"]{3,})"')
STOP_WORDS = frozenset("""
a about above after again against all also an and any are as at be because been before being below between
both but by can could did do does doing down during each even few for from further had has have having he her
here hers him his how i if in into is it its itself just like likes liked more most much my no nor not now of
off on once only or other our out over own quite rather really same she should so some such than that the
their theirs them then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your user users item items book books reader readers rated
rating ratings rate enjoyed enjoy enjoys disliked dislike dislikes prefer prefers preferred seems seem may might
tends tend often usually generally overall high low average avg stars star
""".split())


@dataclass(frozen=True)
class Claim:
    kind: str  # "pos", "neg" or "user"
    text: str
    words: tuple[str, ...]
    supported: bool


def words(text: str) -> list[str]:
    """The matching rule's words: lowercased, stop words and short words dropped, plural s cut."""
    out = []
    for w in _WORD.findall(text.lower()):
        if len(w) < 3 or w in STOP_WORDS or w.isdigit():
            continue
        out.append(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def aspect_of(line: str) -> str:
    return _SPLIT.split(line, maxsplit=1)[0].strip()


def item_claim(line: str) -> tuple[str, str, list[str]] | None:
    """("pos" or "neg", the aspect, the quotations) of one item-analysis line, or None when it
    marks nothing: "[pos] twisty, like their favourites" or
    '- dark: "Too dark for my taste." [neg] -1' (the aspect named first, before a colon)."""
    line = line.strip()
    low = line.lower()
    for tag in ("pos", "neg"):
        if low.startswith(f"[{tag}]"):
            return tag, aspect_of(line[len(tag) + 2:]), _QUOTE.findall(line)
        if f"[{tag}]" in low and ":" in line:
            return tag, line.split(":", 1)[0].strip().lstrip("-*• ").strip(), _QUOTE.findall(line)
    return None


def _claims(answer: Any, style: str) -> list[tuple[str, str, str | None]]:
    """(kind, text, the aspect a quotation is cited for) of every claim (reczero style only)."""
    if style != "reczero":
        return []
    sections = parse_answer(answer, (0.0, 1e9), style).sections  # the scale does not matter here
    found: list[tuple[str, str, str | None]] = []
    for line in sections.get("analyze item", "").splitlines():
        claim = item_claim(line)
        if claim is None:
            continue
        tag, aspect, quotes = claim
        if aspect and not aspect.lower().startswith(_EMPTY):
            found.append((tag, aspect, None))
        found += [("quote", q, aspect) for q in quotes]
    for phrase in _SPLIT.split(sections.get("analyze user", "")):
        phrase = phrase.split(":", 1)[-1].strip()
        if phrase and not phrase.lower().startswith(_EMPTY):
            found.append(("user", phrase, None))
    return found


def claims_of(answer: Any, style: str = "reczero") -> list[tuple[str, str]]:
    """(kind, text) of every claim in the answer's item and user analyses (reczero style only)."""
    return [(kind, text) for kind, text, _ in _claims(answer, style)]


def _squeezed(text: str) -> str:
    return " ".join(text.lower().split())


def check_claims(answer: Any, evidence: str, style: str = "reczero") -> list[Claim]:
    """Each countable claim of the answer, marked supported or not by the evidence text. A quote
    is supported only when the evidence holds it word for word (case and spacing aside) and it
    mentions the aspect it is cited for."""
    shown = set(words(evidence))
    verbatim = _squeezed(evidence)
    out = []
    for kind, text, about in _claims(answer, style):
        ws = tuple(words(text))
        if kind == "quote":
            on_topic = set(words(about or "")) <= set(ws)
            out.append(Claim(kind, text, ws, on_topic and _squeezed(text) in verbatim))
        elif ws:
            out.append(Claim(kind, text, ws, sum(w in shown for w in ws) >= SUPPORT * len(ws)))
    return out


def grounding_summary(answer: Any, evidence: str, style: str = "reczero") -> dict:
    """{'supported': k, 'claims': n, 'share': k / n (None without claims), 'unsupported': [...]}"""
    claims = check_claims(answer, evidence, style)
    k = sum(c.supported for c in claims)
    return {"supported": k, "claims": len(claims), "share": k / len(claims) if claims else None,
            "unsupported": [c.text for c in claims if not c.supported][:8]}


def prompt_text(prompt: Any) -> str:
    """The text a prompt showed: a string, or the contents of its chat messages."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)
    return "" if prompt is None else str(prompt)


def grounding(completions: Sequence[Any], prompts: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """Reward: the share of the answer's claims supported by its prompt (0 without claims or
    without a prompt). Never raises."""
    out = []
    for i, completion in enumerate(completions):
        try:
            prompt = prompts[i] if prompts is not None and i < len(prompts) else None
            share = grounding_summary(completion_text(completion), prompt_text(prompt))["share"] if prompt else None
            out.append(float(share) if share is not None else 0.0)
        except Exception:
            out.append(0.0)
    return out
