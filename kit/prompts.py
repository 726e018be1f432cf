"""Prompts: Jinja templates under templates/prompts/ -> system + user chat messages.

The tokenizer's own chat template turns the messages into text (never hand-written
chat markers). Text that comes from users (titles, reviews) is neutralised so that it
cannot open or close an answer tag, and clipped at a word boundary.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

import jinja2

from kit.paths import PROMPTS_DIR
from kit.text import cut_words

_TAG_LIKE = re.compile(r"<\s*(/?)\s*(analyze\s*user|analyze\s*item|match|rate|think|answer)\s*>", re.IGNORECASE)


def neutralise(text: Any) -> str:
    """Make answer tags in user-supplied text harmless: `<rate>` -> `‹rate›`."""
    return _TAG_LIKE.sub(lambda m: f"‹{m.group(1)}{m.group(2)}›", str(text))


def clip(text: Any, limit: int = 400) -> str:
    """Neutralise, collapse whitespace, and cut at a word boundary with an ellipsis."""
    return cut_words(" ".join(neutralise("" if text is None else text).split()), limit)


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    if not PROMPTS_DIR.is_dir():
        raise FileNotFoundError(f"prompt templates not found in {PROMPTS_DIR}: install the kit from a clone "
                                "(pip install -e .) or set KIT_TEMPLATES to the repo's templates/ folder")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=False, autoescape=False)
    env.filters["clip"] = clip
    return env


def _num(x: float) -> str:
    return f"{x:g}"


def system_prompt(style: str, scale: tuple[float, float], template: str = "full") -> str:
    """The instruction for a prompt style; a template may have a shorter one of its own
    (`reczero_system_compact.j2`: the same four stages in a third of the tokens)."""
    name = f"{style}_system_{template}.j2"
    if template == "full" or not (PROMPTS_DIR / name).is_file():
        name = f"{style}_system.j2"
    return _env().get_template(name).render(scale_min=_num(scale[0]), scale_max=_num(scale[1])).strip()


_EMPTY_ITEM = {"title": "(unknown item)", "categories": [], "brand": None, "price": None, "features": [], "description": ""}


def _item(items: Mapping[str, Mapping], item_id: str) -> dict:
    found = items.get(item_id)
    return {**_EMPTY_ITEM, **(dict(found) if found else {"title": f"item {item_id}"})}


TEMPLATES = {"full": "user.j2", "compact": "user_compact.j2"}


def user_prompt(sample: Mapping, items: Mapping[str, Mapping], review_chars: int = 400,
                description_chars: int = 400, summary_chars: int = 200, template: str = "full") -> str:
    """The four inputs: user history, user average, target item (+ its recent ratings), item average.
    `template`: "full" (the paper's: every field of every item) or "compact" (the target first, then
    the user's reviews; see templates/prompts/user_compact.j2)."""
    history = [{**h, "item": _item(items, h["item_id"])} for h in sample["user_history"]]
    return _env().get_template(TEMPLATES[template]).render(
        user_history=history, user_avg=sample["user_avg"], user_count=sample["user_count"],
        item=_item(items, sample["item_id"]), item_history=list(sample["item_history"]),
        item_avg=sample["item_avg"], item_count=sample["item_count"],
        review_chars=review_chars, description_chars=description_chars, summary_chars=summary_chars,
    ).strip()


def build_messages(sample: Mapping, items: Mapping[str, Mapping], style: str,
                   scale: tuple[float, float], template: str = "full", **clip_sizes: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt(style, scale, template)},
            {"role": "user", "content": user_prompt(sample, items, template=template, **clip_sizes)}]


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """Prompt text through the tokenizer's own chat template, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
