"""Consensus among candidate outputs: keep an example only when the models agree."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from .rouge import pairwise_rouge_l

_PUNCT = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """SQuAD-style: lowercase, drop ASCII punctuation, collapse whitespace."""
    return _SPACES.sub(" ", text.lower().translate(_PUNCT)).strip()


@dataclass(frozen=True, slots=True)
class Consensus:
    kept: bool
    method: str  # exact_match | medoid | first_of_best_pair | single, or the reject reason
    chosen_index: int | None
    pairwise: list[tuple[int, int, float]]  # (i, j, Rouge-L) for i < j
    min_score: float | None = None
    min_pair: tuple[int, int] | None = None


def select_consensus(candidates: Sequence[str], threshold: float = 0.01, rule: str = "medoid") -> Consensus:
    """The method's ensembling rule for any k >= 2 candidates (candidate 0 is the generator's)."""
    k = len(candidates)
    if k < 2:
        raise ValueError("consensus needs at least two candidates")
    norm = [normalize(c) for c in candidates]
    for i in range(k):  # exact match after normalization wins outright, threshold not applied
        if norm[i] and any(norm[i] == norm[j] for j in range(k) if j != i):
            return Consensus(True, "exact_match", i, [])
    scores = pairwise_rouge_l(norm, stem=True)
    pairwise = [(i, j, s) for (i, j), s in sorted(scores.items())]
    min_pair = min(scores, key=lambda p: (scores[p], p))
    low = scores[min_pair]
    if low <= threshold:
        return Consensus(False, "low_agreement", None, pairwise, low, min_pair)
    if k == 2:
        chosen = 0
    elif rule == "medoid":
        totals = [sum(scores[min(i, j), max(i, j)] for j in range(k) if j != i) for i in range(k)]
        chosen = max(range(k), key=lambda i: (totals[i], -i))  # ties: lowest index
    elif rule == "first_of_best_pair":
        chosen = min(scores, key=lambda p: (-scores[p], p))[0]  # ties: first pair
    else:
        raise ValueError(f"unknown consensus rule {rule!r}")
    if not candidates[chosen].strip():
        return Consensus(False, "empty_selected", chosen, pairwise, low, min_pair)
    return Consensus(True, rule, chosen, pairwise, low, min_pair)
