"""Rouge-L must be float-equal to rouge_score; NoveltyIndex must match a brute-force rouge_score loop."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer, tokenizers

from ensemble_instruct import rouge
from ensemble_instruct.rouge import (
    NoveltyIndex,
    NoveltyResult,
    pairwise_rouge_l,
    rouge_l,
    rouge_l_tokens,
    tokenize,
)

TOKENIZERS = {stem: tokenizers.DefaultTokenizer(stem) for stem in (True, False)}
SCORERS = {stem: rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem) for stem in (True, False)}


def ref(target: str, prediction: str, stem: bool) -> float:
    return SCORERS[stem].score(target, prediction)["rougeL"].fmeasure


# Words chosen to collide after lowercasing, splitting or Porter stemming.
WORDS = ("the a an of to and is are run runs running ran cat cats Cats dog dogs ponies pony caresses "  # noqa: SIM905
         "generously generous sized size 1 2 22 007 x yy zzz naïve café über e-mail don't U.S. 3.14 "
         "Write write writing List the-the ok").split()
ODD = ["", " ", "\t\n  ", "...", "!?;:", "—", "é", "日本語", "🙂", "İstanbul", "\u212a", "ǅ", "Straße", "１２３",
       "a", "A.", "42", "4 2", "x-y_z", "\x00", "\ud800"]
SENTENCES = [
    "Write a short poem about the sea at night.",
    "Give three tips for staying healthy during winter.",
    "Translate the following sentence into French.",
    "Classify the sentiment of this movie review as positive or negative.",
    "Summarize the article below in two sentences.",
    "Generate a list of five creative names for a coffee shop.",
    "Explain why the sky is blue to a five-year-old child.",
    "Find the largest number in the given list of integers.",
    "Rewrite the paragraph so that it is easier to read.",
    "Is there anything I can eat for breakfast that doesn't include eggs?",
    "Suggest a good title for the following blog post about travelling in Japan.",
    "Convert the temperature from Celsius to Fahrenheit.",
]

word_text = st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join)
char_text = st.text(alphabet=st.sampled_from(list("abcAB12 .,-_\t\néß日🙂İ\u212a")), max_size=40)
any_text = st.one_of(word_text, char_text, st.sampled_from(ODD + SENTENCES), st.text(max_size=30))


def perturb(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(0, 4)):
        op, i = rng.random(), rng.randrange(len(words) + 1)
        if op < 0.3 and len(words) > 1:
            j = min(i, len(words) - 2)
            words[j], words[j + 1] = words[j + 1], words[j]
        elif op < 0.55 and words:
            del words[min(i, len(words) - 1)]
        elif op < 0.8:
            words.insert(i, rng.choice(WORDS))
        else:
            words += rng.choice(SENTENCES).split()[rng.randrange(4):]
    return " ".join(words)


def random_text(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return perturb(rng, rng.choice(SENTENCES))
    if r < 0.9:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 20)))
    return rng.choice(ODD)


# --- hand-worked cases --------------------------------------------------------------------------------

def test_hand_worked_scores():
    a = "The capital of Australia is Canberra."
    b = "The capital of Australia is Canberra, not Sydney."
    c = "Canberra, not Sydney."
    assert round(rouge_l(a, b), 3) == 0.857  # LCS 6 of 6 and 8 tokens: 12/14
    assert round(rouge_l(a, c), 3) == 0.222  # LCS 1 of 6 and 3 tokens: 2/9
    assert round(rouge_l(b, c), 3) == 0.545  # LCS 3 of 8 and 3 tokens: 6/11
    for x, y in ((a, b), (a, c), (b, c)):
        assert rouge_l(x, y) == ref(x, y, True) == ref(y, x, True)


def test_tokenizer_and_edge_cases():
    assert tokenize("Running dogs, 2 cats!", stem=True) == ["run", "dog", "2", "cat"]
    assert tokenize("Running dogs, 2 cats!", stem=False) == ["running", "dogs", "2", "cats"]
    assert rouge_l("", "") == rouge_l("...", "word") == rouge_l("word", "   ") == 0.0
    assert rouge_l("same words here", "Same, words; HERE!") == 1.0
    assert rouge_l("cats", "cat") == 1.0 and rouge_l("cats", "cat", stem=False) == 0.0
    assert rouge_l_tokens([], ["a"]) == 0.0
    assert rouge_l_tokens(["a", "b", "c"], ["a", "c"]) == ref("a b c", "a c", False)


# --- float equality with rouge_score ------------------------------------------------------------------

@settings(max_examples=400, deadline=None, database=None)
@given(a=any_text, b=any_text, stem=st.booleans())
def test_rouge_l_float_equal_to_rouge_score(a, b, stem):
    assert tokenize(a, stem) == TOKENIZERS[stem].tokenize(a)
    expected = ref(a, b, stem)
    assert rouge_l(a, b, stem) == expected
    assert rouge_l(b, a, stem) == ref(b, a, stem) == expected  # symmetric, bit for bit
    assert rouge_l_tokens(tokenize(a, stem), tokenize(b, stem)) == expected


def test_rouge_l_randomized_and_long_texts():
    rng = random.Random(7)
    for _ in range(1500):
        a, b, stem = random_text(rng), random_text(rng), rng.random() < 0.5
        assert rouge_l(a, b, stem) == ref(a, b, stem)
    for length in (64, 65, 130, 400):  # across rapidfuzz's 64-symbol block boundary
        a = " ".join(rng.choice(WORDS) for _ in range(length))
        b = " ".join(rng.choice(WORDS[:6]) for _ in range(length + rng.randint(-5, 5)))
        for stem in (True, False):
            assert rouge_l(a, b, stem) == ref(a, b, stem)
    assert rouge_l("go " * 300, "go " * 7) == ref("go " * 300, "go " * 7, True)


def test_ids_beyond_unicode_fall_back_to_int_tuples(monkeypatch):
    monkeypatch.setattr(rouge, "_MAX_CODEPOINT", -1)
    a, b = ["x", "y", "z", "x"], ["y", "q", "x"]
    assert isinstance(rouge._as_seq([1, 2]), tuple)
    assert rouge_l_tokens(a, b) == ref(" ".join(a), " ".join(b), False)


def test_pairwise_rouge_l():
    rng = random.Random(3)
    texts = [random_text(rng) for _ in range(9)] + ["", SENTENCES[0]]
    for stem in (True, False):
        pairs = pairwise_rouge_l(texts, stem)
        assert set(pairs) == {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))}
        for (i, j), score in pairs.items():
            assert score == ref(texts[i], texts[j], stem)
    assert pairwise_rouge_l([]) == {} and pairwise_rouge_l(["only"]) == {}


# --- NoveltyIndex against a brute-force rouge_score loop ----------------------------------------------

def brute(candidate: str, pool: list[str], stem: bool, threshold: float, top_k: int) -> NoveltyResult:
    scores = [ref(candidate, p, stem) for p in pool]
    best = max(scores, default=0.0)
    ranked = sorted((-s, i) for i, s in enumerate(scores) if s > 0)
    return NoveltyResult(
        max_score=best,
        nearest=pool[scores.index(best)] if best > 0 else None,
        top=[(pool[i], -s) for s, i in ranked[:top_k]],
        mean=math.fsum(scores) / len(pool) if pool else 0.0,
        is_novel=best <= threshold,
    )


@pytest.mark.parametrize("seed", range(6))
def test_novelty_index_matches_brute_force(seed):
    rng = random.Random(seed)
    stem = seed % 2 == 1
    pool = [random_text(rng) for _ in range(rng.choice([0, 5, 60, 250]))]
    pool += pool[:3]  # exact duplicates: ties go to the earlier entry
    index = NoveltyIndex(threshold=0.7, stem=stem)
    for p in pool:
        index.add(p)
    assert len(index) == len(pool)
    for _ in range(25):
        cand = random_text(rng) if rng.random() < 0.6 else perturb(rng, rng.choice(pool or SENTENCES))
        for top_k in (0, 1, 3, 10):
            want = brute(cand, pool, stem, 0.7, top_k)
            got = index.query(cand, top_k=top_k, with_mean=True)
            assert got == want
            fast = index.query(cand, top_k=top_k)  # pruned path
            assert fast == NoveltyResult(want.max_score, want.nearest, want.top, None, want.is_novel)
        assert index.is_novel(cand) == want.is_novel
    assert index.query_many(SENTENCES[:2], top_k=2) == [index.query(s, top_k=2) for s in SENTENCES[:2]]


@settings(max_examples=60, deadline=None, database=None)
@given(pool=st.lists(st.one_of(word_text, st.sampled_from(ODD + SENTENCES)), max_size=120),
       cands=st.lists(any_text, min_size=1, max_size=4),
       threshold=st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]), stem=st.booleans())
def test_novelty_index_matches_brute_force_hypothesis(pool, cands, threshold, stem):
    index = NoveltyIndex(threshold=threshold, stem=stem)
    for p in pool:
        index.add(p)
    for cand in cands:
        want = brute(cand, pool, stem, threshold, 5)
        assert index.query(cand, top_k=5, with_mean=True) == want
        assert index.query(cand, top_k=5).top == want.top
        assert index.is_novel(cand) == want.is_novel


def test_pruning_never_changes_decision_at_the_threshold():
    """Thresholds equal to an achieved score (and one ulp below) hit the bound's tie cases."""
    rng = random.Random(11)
    pool = [perturb(rng, rng.choice(SENTENCES)) for _ in range(300)]
    cands = [perturb(rng, rng.choice(SENTENCES)) for _ in range(40)]
    for cand in cands:
        scores = [ref(cand, p, False) for p in pool]
        for t in sorted(set(scores))[-3:]:
            for threshold in (t, math.nextafter(t, -math.inf)):
                if not 0 <= threshold <= 1:
                    continue
                index = NoveltyIndex(threshold=threshold)
                for p in pool:
                    index.add(p)
                want = max(scores) <= threshold
                assert index.is_novel(cand) == want
                assert index.query(cand, top_k=0).is_novel == want
                assert index.query(cand, top_k=0).max_score == max(scores)


def test_query_and_add_many_adds_each_novel_text_before_the_next():
    rng = random.Random(5)
    stream = [perturb(rng, rng.choice(SENTENCES)) for _ in range(150)] + ["", "", SENTENCES[0]]
    index = NoveltyIndex(threshold=0.7)
    results = index.query_and_add_many(stream, top_k=3, with_mean=True)
    pool: list[str] = []
    for text, got in zip(stream, results):
        assert got == brute(text, pool, False, 0.7, 3)
        if got.is_novel:
            pool.append(text)
    assert len(index) == len(pool) and 0 < len(pool) < len(stream)


def test_keys_label_results_and_threshold_is_checked():
    index = NoveltyIndex(threshold=0.5)
    assert index.add("Write a poem about the sea.", key="seed_1") == 0
    index.add("Completely different words entirely.")
    r = index.query("Write a poem about the sea!", top_k=5, with_mean=True)
    assert (r.max_score, r.nearest, r.top, r.is_novel) == (1.0, "seed_1", [("seed_1", 1.0)], False)
    assert r.mean == 0.5
    empty = NoveltyIndex().query("anything", with_mean=True)
    assert empty == NoveltyResult(0.0, None, [], 0.0, True)
    results = NoveltyIndex().query_and_add_many(["a b c", "a b c"], keys=["k1", "k2"])
    assert [r.is_novel for r in results] == [True, False] and results[1].nearest == "k1"
    with pytest.raises(ValueError):
        NoveltyIndex(threshold=1.5)
