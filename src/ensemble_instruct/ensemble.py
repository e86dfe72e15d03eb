"""Stage 4: keep an example only when the models agree, and choose its answer. Pure functions: candidates in,
a decision out."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from .filters import check_answer
from .records import Candidate
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


@dataclass(frozen=True, slots=True)
class Decision:
    """What stage 4 made of one instance's candidates. `reason` is the selection method when kept, else why
    the example was dropped; `dropped` names the candidates that did not vote, and why."""

    kept: bool
    reason: str
    chosen: int | None  # a candidate's index
    pairwise: list[list]  # [i, j, Rouge-L] by candidate index, over the voters
    dropped: dict[int, str]
    min_score: float | None = None
    min_pair: list[int] | None = None


def screen(
    candidates: Sequence[Candidate], instruction: str, input_text: str, hygiene: bool, drop_input_copies: bool
) -> dict[int, str]:
    """Candidates that may not vote, with the reason: an answer that only repeats a type-A input (two small
    models that both echo it would agree), and with hygiene on, empty, cut at the token limit, restating the
    instruction, or caught in a loop."""
    dropped = {}
    for c in candidates:
        reason = check_answer(c.text, instruction, c.finish_reason) if hygiene else None
        if reason is None and drop_input_copies and input_text.strip() and normalize(c.text) == normalize(input_text):
            reason = "copies_input"
        if reason is not None:
            dropped[c.index] = reason
    return dropped


def decide(
    candidates: Sequence[Candidate],
    instruction: str,
    input_text: str,
    threshold: float = 0.01,
    rule: str = "medoid",
    hygiene: bool = True,
    drop_input_copies: bool = True,
    prefer: Sequence[str] = (),
) -> Decision:
    """Screen the candidates, then keep the consensus of those left (at least two), or say why not.

    The agreement test decides whether the example is kept. The method's rules (medoid, first_of_best_pair)
    also choose the answer by agreement; "preferred" keeps the answer of the first member in `prefer` that
    voted (a member's measured strength, see benchmarks/selection.py), the others' in candidate order;
    "generator" keeps the generator's own answer when it voted, else as "preferred" does."""
    dropped = screen(candidates, instruction, input_text, hygiene, drop_input_copies)
    voters = [c for c in candidates if c.index not in dropped]
    if len(voters) < 2:
        return Decision(False, "too_few_answers", None, [], dropped)
    by_order = rule in ("preferred", "generator")
    verdict = select_consensus([c.text for c in voters], threshold, "medoid" if by_order else rule)
    pairwise = [[voters[i].index, voters[j].index, round(s, 6)] for i, j, s in verdict.pairwise]
    min_pair = [voters[i].index for i in verdict.min_pair] if verdict.min_pair else None
    if not verdict.kept:
        return Decision(False, verdict.method, None, pairwise, dropped, verdict.min_score, min_pair)
    if by_order:
        rank = {member: k for k, member in enumerate(prefer)}
        mine = rule == "generator"  # the generator's own answer before any other
        best = min(voters, key=lambda c: (mine and c.role != "generator", rank.get(c.model, len(rank)), c.index))
        return Decision(True, rule, best.index, pairwise, dropped, verdict.min_score, min_pair)
    chosen = voters[verdict.chosen_index or 0].index  # a kept verdict always names its choice
    return Decision(True, verdict.method, chosen, pairwise, dropped, verdict.min_score, min_pair)
