"""Exact Rouge-L F-measure, float-equal to ``rouge_score``'s ``rougeL``, and a novelty pool index.

Texts are tokenised once with ``rouge_score``'s own tokenizer, tokens are mapped to integer ids and a
token sequence is stored as a ``str`` of ``chr(id)`` code points, so ``rapidfuzz``'s compiled LCS gives the
token-level longest common subsequence. The F-measure is then computed with the same arithmetic, in the
same order, as ``rouge_score.rouge_scorer._score_lcs`` and ``rouge_score.scoring.fmeasure``.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from nltk.stem import porter
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import tokenize as _rs_tokenize

__all__ = [
    "NoveltyIndex",
    "NoveltyResult",
    "lcs_lengths",
    "pairwise_rouge_l",
    "rouge_l",
    "rouge_l_tokens",
    "tokenize",
]

# The pruning bound 2*overlap/(len_a+len_b) and rouge_score's 2*p*r/(p+r) agree up to a few ulps;
# this slack keeps every skip sound whatever the rounding.
_EPS = 1e-9
_TEXT_CACHE = 1 << 16  # encoded texts kept per stemming mode
_STEM_CACHE = 1 << 17  # stemmed words kept
_MAX_CODEPOINT = 0x10FFFF
_LCS = LCSseq.similarity

# One process-wide vocabulary (token -> id) so sequences from any call or index compare directly.
_vocab: dict[str, int] = {}
_vocab_lock = threading.Lock()


def _token_id(token: str) -> int:
    tid = _vocab.get(token)
    if tid is None:
        with _vocab_lock:
            tid = _vocab.setdefault(token, len(_vocab))
    return tid


def _as_seq(ids: Sequence[int]) -> str | tuple[int, ...]:
    """A str of code points for rapidfuzz; a tuple of ints (same LCS) once ids outgrow Unicode."""
    if ids and max(ids) > _MAX_CODEPOINT:
        return tuple(ids)
    return "".join(map(chr, ids))


class _CachedStemmer:
    """rouge_score's Porter stemmer with a memo; stemming is a pure function of the word."""

    def __init__(self) -> None:
        self._stemmer = porter.PorterStemmer()
        self._memo: dict[str, str] = {}

    def stem(self, word: str) -> str:
        out = self._memo.get(word)
        if out is None:
            if len(self._memo) >= _STEM_CACHE:
                self._memo.clear()
            out = self._memo[word] = self._stemmer.stem(word)
        return out


class _Encoder:
    """Tokenises like ``rouge_score.tokenizers.DefaultTokenizer(stem)`` and caches the encodings."""

    def __init__(self, stem: bool) -> None:
        self._stemmer = _CachedStemmer() if stem else None
        self.encode = lru_cache(maxsize=_TEXT_CACHE)(self._encode)

    def tokenize(self, text: str) -> list[str]:
        return _rs_tokenize.tokenize(text, self._stemmer)

    def _encode(self, text: str) -> tuple[tuple[int, ...], str | tuple[int, ...]]:
        ids = tuple(_token_id(t) for t in self.tokenize(text))
        return ids, _as_seq(ids)


_ENCODERS = {True: _Encoder(True), False: _Encoder(False)}


def tokenize(text: str, stem: bool = True) -> list[str]:
    """Tokens exactly as ``rouge_score`` produces them (lowercase, split on non-alphanumerics)."""
    return _ENCODERS[bool(stem)].tokenize(text)


def _fmeasure(lcs: int, n_pred: int, n_target: int) -> float:
    # Same operations, same order as rouge_scorer._score_lcs and scoring.fmeasure.
    if not n_pred or not n_target:
        return 0.0
    precision = lcs / n_pred
    recall = lcs / n_target
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _fmeasure_np(lcs: np.ndarray, n_pred: np.ndarray, n_target: int) -> np.ndarray:
    """Vectorised ``_fmeasure`` for non-empty sides; IEEE float64 ops give the same bits."""
    precision = lcs / n_pred
    recall = lcs / n_target
    total = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * precision * recall / total
    f[total == 0] = 0.0
    return f


def rouge_l(a: str, b: str, stem: bool = True) -> float:
    """Rouge-L F-measure of two texts, float-equal to ``RougeScorer(["rougeL"], use_stemmer=stem)``."""
    enc = _ENCODERS[bool(stem)].encode
    ids_a, seq_a = enc(a)
    ids_b, seq_b = enc(b)
    if not ids_a or not ids_b:
        return 0.0
    return _fmeasure(_LCS(seq_a, seq_b), len(ids_b), len(ids_a))


def lcs_lengths(a: str, b: str, stem: bool = True) -> tuple[int, int, int]:
    """(LCS, tokens of a, tokens of b): the parts of Rouge-L, for precision- or recall-like measures."""
    enc = _ENCODERS[bool(stem)].encode
    ids_a, seq_a = enc(a)
    ids_b, seq_b = enc(b)
    return (_LCS(seq_a, seq_b) if ids_a and ids_b else 0), len(ids_a), len(ids_b)


def rouge_l_tokens(a: Sequence[str], b: Sequence[str]) -> float:
    """Rouge-L F-measure of two token sequences, compared as given (``rouge_score._score_lcs``)."""
    if not a or not b:
        return 0.0
    seq_a = _as_seq([_token_id(t) for t in a])
    seq_b = _as_seq([_token_id(t) for t in b])
    return _fmeasure(_LCS(seq_a, seq_b), len(b), len(a))


def pairwise_rouge_l(texts: Sequence[str], stem: bool = True) -> dict[tuple[int, int], float]:
    """Rouge-L F-measure of every pair ``(i, j)``, ``i < j``, of ``texts``."""
    encoded = [_ENCODERS[bool(stem)].encode(t) for t in texts]
    seqs = [s for _, s in encoded]
    out: dict[tuple[int, int], float] = {}
    if not seqs:
        return out
    lcs = process.cdist(seqs, seqs, scorer=_LCS, dtype=np.int64, workers=1)
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            out[(i, j)] = _fmeasure(int(lcs[i, j]), len(encoded[j][0]), len(encoded[i][0]))
    return out


@dataclass(frozen=True)
class NoveltyResult:
    """How close a candidate is to a pool; ``is_novel`` iff ``max_score <= threshold``."""

    max_score: float
    nearest: str | None
    top: list[tuple[str, float]]
    mean: float | None
    is_novel: bool


class _Growable:
    """An append-only int array with amortised O(1) appends and a zero-copy view."""

    __slots__ = ("buf", "size")

    def __init__(self, dtype: type = np.int32) -> None:
        self.buf: np.ndarray = np.empty(4, dtype)
        self.size = 0

    def append(self, value: int) -> None:
        if self.size == self.buf.shape[0]:
            grown = np.empty(2 * self.size, self.buf.dtype)
            grown[: self.size] = self.buf
            self.buf = grown
        self.buf[self.size] = value
        self.size += 1

    def view(self) -> np.ndarray:
        return self.buf[: self.size]


class NoveltyIndex:
    """A growing pool of texts answering "is this candidate's max Rouge-L to the pool <= threshold?".

    Scores are exact (float-equal to ``rouge_score``). Pruning uses a sound bound: with ``overlap`` the size
    of the token-multiset intersection of candidate C and entry P, ``LCS <= overlap <= min(|C|, |P|)``,
    so ``F <= 2 * overlap / (|C| + |P|)``. Overlaps for the whole pool come from an inverted index keyed by
    (token, k-th occurrence): ``min(count_C, count_P)`` is the number of k with both counts >= k. Entries
    sharing no token have LCS 0 and score 0, so the mean needs only the entries that share one.

    Results name entries by their key (the text itself unless a key was given to ``add``). Ties for the
    nearest entry and in ``top`` go to the entry added first; ``top`` lists only non-zero scores; ``mean``
    is ``math.fsum`` of all scores over the pool size (0.0 for an empty pool).
    """

    def __init__(self, threshold: float = 0.7, stem: bool = False) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.stem = bool(stem)
        self._encode = _ENCODERS[self.stem].encode
        self._keys: list[str] = []  # what results report: the key, else the text
        self._seqs: list[str | tuple[int, ...]] = []
        self._lens = _Growable(np.int64)
        self._postings: dict[tuple[int, int], _Growable] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, text: str, key: str | None = None) -> int:
        """Add a text to the pool; returns its entry id."""
        ids, seq = self._encode(text)
        entry = len(self._keys)
        self._keys.append(text if key is None else key)
        self._seqs.append(seq)
        self._lens.append(len(ids))
        for tid, count in Counter(ids).items():
            for k in range(1, count + 1):
                posting = self._postings.get((tid, k))
                if posting is None:
                    posting = self._postings[(tid, k)] = _Growable()
                posting.append(entry)
        return entry

    def _overlaps(self, ids: Sequence[int]) -> np.ndarray:
        parts = []
        for tid, count in Counter(ids).items():
            for k in range(1, count + 1):
                posting = self._postings.get((tid, k))
                if posting is None:  # nobody has k copies, so nobody has more
                    break
                parts.append(posting.view())
        if not parts:
            return np.zeros(len(self._keys), np.int64)
        return np.bincount(np.concatenate(parts), minlength=len(self._keys))

    def _score(self, seq: str | tuple[int, ...], n: int, entries: np.ndarray) -> np.ndarray:
        if not entries.size:
            return np.zeros(0)
        seqs = self._seqs
        choices = [seqs[e] for e in entries.tolist()]
        lcs = process.cdist([seq], choices, scorer=_LCS, dtype=np.int64, workers=1)[0]
        return _fmeasure_np(lcs, self._lens.view()[entries], n)

    def _candidates(self, text: str) -> tuple[str | tuple[int, ...], int, np.ndarray, np.ndarray]:
        ids, seq = self._encode(text)
        overlap = self._overlaps(ids)
        entries = np.flatnonzero(overlap)
        bound = 2 * overlap[entries] / (len(ids) + self._lens.view()[entries])
        return seq, len(ids), entries, bound

    def query(self, text: str, top_k: int = 10, with_mean: bool = False) -> NoveltyResult:
        """Exact max score, nearest entry, top-k non-zero scores and (optionally) the pool mean."""
        seq, n, entries, bound = self._candidates(text)
        k = max(int(top_k), 1)
        if not with_mean and entries.size > 4 * k + 64:
            # Score the entries with the highest bounds first; the k-th best score among them is a lower
            # bound on the final k-th best, so only entries whose bound reaches it can still enter the
            # result (ties included, hence >= and the slack). Scoring them in one batch, unsorted, visits
            # the same entries as a scan in decreasing-bound order that stops below that score.
            first = np.argpartition(-bound, 4 * k + 63)[: 4 * k + 64]
            scores = self._score(seq, n, entries[first])
            nonzero = scores[scores > 0]
            cut = -np.partition(-nonzero, k - 1)[k - 1] if nonzero.size >= k else 0.0
            rest = np.ones(entries.size, bool)
            rest[first] = False
            rest &= bound + _EPS >= cut
            more = np.flatnonzero(rest)
            entries = np.concatenate([entries[first], entries[more]])
            scores = np.concatenate([scores, self._score(seq, n, entries[first.size :])])
        else:
            scores = self._score(seq, n, entries)
        return self._result(entries, scores, top_k, with_mean)

    def _result(self, entries: np.ndarray, scores: np.ndarray, top_k: int, with_mean: bool) -> NoveltyResult:
        keep = scores > 0
        entries, scores = entries[keep], scores[keep]
        mean = None
        if with_mean:
            mean = math.fsum(scores.tolist()) / len(self._keys) if self._keys else 0.0
        if not entries.size:
            return NoveltyResult(0.0, None, [], mean, self.threshold >= 0.0)
        order = np.lexsort((entries, -scores))[: max(int(top_k), 1)]
        ranked = list(zip(entries[order].tolist(), scores[order].tolist()))
        top = [(self._keys[e], s) for e, s in ranked[: max(int(top_k), 0)]]
        best_entry, best = ranked[0]
        return NoveltyResult(best, self._keys[best_entry], top, mean, best <= self.threshold)

    def is_novel(self, text: str) -> bool:
        """Decision only: True iff no entry scores above the threshold; scores only entries whose bound
        exceeds it, so it is the cheapest check."""
        seq, n, entries, bound = self._candidates(text)
        scores = self._score(seq, n, entries[bound + _EPS > self.threshold])
        return float(scores.max(initial=0.0)) <= self.threshold

    def query_many(self, texts: Sequence[str], top_k: int = 10, with_mean: bool = False) -> list[NoveltyResult]:
        """``query`` for each text against the current pool (the pool is not changed)."""
        return [self.query(t, top_k, with_mean) for t in texts]

    def query_and_add_many(
        self, texts: Sequence[str], keys: Sequence[str] | None = None, top_k: int = 0, with_mean: bool = False
    ) -> list[NoveltyResult]:
        """Query texts in order, adding each novel one to the pool before the next is tested."""
        results = []
        for i, text in enumerate(texts):
            result = self.query(text, top_k, with_mean)
            if result.is_novel:
                self.add(text, None if keys is None else keys[i])
            results.append(result)
        return results
