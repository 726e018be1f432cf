"""Text helpers shared by the data readers and the prompt renderer."""
from __future__ import annotations


def cut_words(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary, with an ellipsis when cut."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(",;:.") + "..."
