"""The consensus rule on the hand-worked cases of the method specification."""

import pytest

from ensemble_instruct.ensemble import decide, normalize, select_consensus
from ensemble_instruct.records import Candidate

CANBERRA = [
    "The capital of Australia is Canberra.",
    "The capital of Australia is Canberra, not Sydney.",
    "Canberra, not Sydney.",
]


def test_normalize_is_squad_style():
    assert normalize("  The  Capital,   of AUSTRALIA! ") == "the capital of australia"


def test_worked_example_scores():
    verdict = select_consensus(CANBERRA)
    scores = {(i, j): s for i, j, s in verdict.pairwise}
    assert round(scores[0, 1], 3) == 0.857
    assert round(scores[0, 2], 3) == 0.222
    assert round(scores[1, 2], 3) == 0.545


def test_medoid_and_first_of_best_pair_differ():
    medoid = select_consensus(CANBERRA, rule="medoid")
    paper = select_consensus(CANBERRA, rule="first_of_best_pair")
    assert (medoid.kept, medoid.method, medoid.chosen_index) == (True, "medoid", 1)
    assert (paper.kept, paper.method, paper.chosen_index) == (True, "first_of_best_pair", 0)


def test_exact_match_skips_the_threshold():
    verdict = select_consensus(["Canberra.", "canberra", "Sydney"])
    assert (verdict.kept, verdict.method, verdict.chosen_index) == (True, "exact_match", 0)


def test_exact_match_between_extras_picks_the_first_extra():
    verdict = select_consensus(["Sydney", "Canberra", "canberra!"])
    assert (verdict.method, verdict.chosen_index) == ("exact_match", 1)


def test_low_agreement_is_rejected_with_its_pair():
    verdict = select_consensus(["Canberra", "It is Canberra.", "Sydney"])
    assert not verdict.kept
    assert verdict.method == "low_agreement"
    assert verdict.min_score == 0.0
    assert verdict.min_pair == (0, 2)


def test_two_candidates_keep_the_generator():
    verdict = select_consensus(["Canberra", "It is Canberra."])
    assert verdict.kept and verdict.chosen_index == 0
    assert verdict.pairwise[0][2] == pytest.approx(0.5)


def test_threshold_is_strict():
    # R = 0.5 exactly: kept above a 0.49 threshold, dropped at 0.5
    assert select_consensus(["Canberra", "It is Canberra."], threshold=0.49).kept
    assert not select_consensus(["Canberra", "It is Canberra."], threshold=0.5).kept


def test_medoid_ties_go_to_the_lowest_index():
    # all three pairs score the same, so every sum ties
    verdict = select_consensus(["red apple", "red pear", "red plum"])
    assert verdict.chosen_index == 0
    paper = select_consensus(["red apple", "red pear", "red plum"], rule="first_of_best_pair")
    assert paper.chosen_index == 0


def test_empty_candidates_never_match_exactly():
    verdict = select_consensus(["", "", "Canberra"])
    assert not verdict.kept and verdict.method == "low_agreement"


def test_empty_selected_is_rejected():
    verdict = select_consensus(["...", "Canberra is big", "Canberra is big!"], threshold=0.0)
    # "..." normalizes to "" so it cannot match; the extras match each other exactly
    assert verdict.method == "exact_match" and verdict.chosen_index == 1


def test_four_candidates_medoid():
    cands = ["a b c d", "a b c", "a b", "x y z"]
    verdict = select_consensus(cands, threshold=0.0)
    assert not verdict.kept  # "x y z" shares nothing: min 0 is not above 0
    verdict = select_consensus(cands[:3], threshold=0.0)
    assert verdict.chosen_index == 1  # "a b c" is closest to both others


def _cands(*texts, finish=None):
    return [Candidate(i, f"m{i}", "generator" if i == 0 else "extra", "zero_shot", t,
                      finish_reason=(finish or {}).get(i, "stop")) for i, t in enumerate(texts)]


def test_decide_screens_candidates_and_votes_among_the_rest():
    instruction = "Name the capital of Australia."
    cands = _cands("Canberra, not Sydney.", "The capital of Australia is Canberra.", "",
                   "The capital of Australia is Canberra, not Sydney.", finish={1: "length"})
    decision = decide(cands, instruction, "", hygiene=True)
    assert decision.dropped == {1: "truncated", 2: "empty"}
    # the voters are 0 and 3: with k = 2 the first of them is kept; pairs are named by candidate index
    assert decision.kept and decision.chosen == 0 and [p[:2] for p in decision.pairwise] == [[0, 3]]
    # without hygiene the method's vote over all four: the empty answer scores 0 with everyone
    paper = decide(cands, instruction, "", hygiene=False)
    assert not paper.kept and paper.reason == "low_agreement" and paper.dropped == {}


def test_decide_drops_an_example_left_with_fewer_than_two_voters():
    cands = _cands("the sea", "The sea.", "a cat sat")
    decision = decide(cands, "Copy the input.", "the sea", hygiene=True)
    assert decision.dropped == {0: "copies_input", 1: "copies_input"}
    assert not decision.kept and decision.reason == "too_few_answers" and decision.chosen is None
    assert decide(cands, "Copy the input.", "the sea", drop_input_copies=False).reason == "exact_match"


VOTERS = [Candidate(0, "small", "generator", "few_shot", "Canberra is the capital."),
          Candidate(1, "big", "extra", "zero_shot", "The capital of Australia is Canberra."),
          Candidate(2, "tiny", "extra", "zero_shot", "It is Canberra, not Sydney.")]


def test_preferred_keeps_the_strongest_voter_once_the_vote_passes():
    cands = VOTERS
    decision = decide(cands, "Name the capital of Australia.", "", rule="preferred", prefer=["big", "small"])
    assert (decision.kept, decision.reason, decision.chosen) == (True, "preferred", 1)
    # the strongest member did not vote (its answer was cut off): the next one in the list
    cut = [cands[0], Candidate(1, "big", "extra", "zero_shot", cands[1].text, finish_reason="length"), cands[2]]
    assert decide(cut, "Name the capital.", "", rule="preferred", prefer=["big", "small"]).chosen == 0
    # members left out of the list come after it, in candidate order; the vote still decides what is kept
    assert decide(cands, "Name the capital.", "", rule="preferred", prefer=["tiny"]).chosen == 2
    assert decide(cands, "Name the capital.", "", rule="preferred", prefer=[]).chosen == 0
    sydney = [cands[0], Candidate(1, "big", "extra", "zero_shot", "Sydney")]
    assert decide(sydney, "Name the capital.", "", rule="preferred", prefer=["big"]).reason == "low_agreement"


def test_generator_keeps_the_generators_own_answer_when_it_voted():
    cands = VOTERS
    decision = decide(cands, "Name the capital of Australia.", "", rule="generator", prefer=["big", "small"])
    assert (decision.kept, decision.reason, decision.chosen) == (True, "generator", 0)
    # the generator's answer was cut off: it does not vote, and the first voter in the list is kept
    cut = [Candidate(0, "small", "generator", "few_shot", cands[0].text, finish_reason="length"), *cands[1:]]
    assert decide(cut, "Name the capital.", "", rule="generator", prefer=["tiny", "big"]).chosen == 2
    # the same filter as every rule: two answers sharing no word drop the example
    sydney = [cands[0], Candidate(1, "big", "extra", "zero_shot", "Sydney")]
    assert decide(sydney, "Name the capital.", "", rule="generator").reason == "low_agreement"
