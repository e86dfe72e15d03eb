"""Checks on a candidate instruction: each returns the reason it fails, or None."""

from __future__ import annotations

import re
import string

# Tasks a text-only model cannot do or check (the method's list).
KEYWORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
            "map", "maps", "draw", "plot", "go to")
_KEYWORD = re.compile(r"\b(" + "|".join(re.escape(k) for k in KEYWORDS) + r")\b", re.IGNORECASE)


def check_instruction(text: str, min_words: int = 4, max_words: int = 150) -> str | None:
    """The first rule a candidate instruction breaks, in the method's order, or None."""
    if not text:
        return "empty"
    words = len(text.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if match := _KEYWORD.search(text):
        return f"keyword:{match.group(1).lower()}"
    if text.startswith("Write a program"):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "leading_punctuation"
    if not text[0].isascii():
        return "leading_non_ascii"
    return None
