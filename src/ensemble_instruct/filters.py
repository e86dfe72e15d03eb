"""Checks on a candidate instruction and on a candidate answer: each returns the reason it fails, or None."""

from __future__ import annotations

import re
import string

from .rouge import lcs_lengths, tokenize

# Tasks a text-only model cannot do or check (the method's list).
KEYWORDS = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
)
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


# An answer whose words are nearly all the instruction's, in order, restates the task instead of doing it
# ("Here's a 10-minute yoga routine for a beginner:"). Short answers are exempt: a label such as "Fruit"
# is often a word of the instruction.
ECHO_SHARE = 0.8
ECHO_MIN_WORDS = 4
# A run of the same few words over and over (a small model caught in a loop) has few distinct 4-grams.
LOOP_MIN_WORDS = 24
LOOP_DISTINCT_SHARE = 0.4


def check_answer(text: str, instruction: str, finish_reason: str = "stop") -> str | None:
    """The first hygiene rule a candidate answer breaks before the vote, or None. Answers that fail do not
    vote and cannot be chosen: two of them agreeing with each other would outvote a real answer."""
    words = tokenize(text, stem=False)
    if not words:
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if len(words) >= ECHO_MIN_WORDS:
        common, n_answer, _ = lcs_lengths(text, instruction, stem=False)
        if common >= ECHO_SHARE * n_answer:
            return "repeats_instruction"
    if len(words) >= LOOP_MIN_WORDS:
        grams = list(zip(words, words[1:], words[2:], words[3:]))
        if len(set(grams)) < LOOP_DISTINCT_SHARE * len(grams):
            return "degenerate_repetition"
    return None
