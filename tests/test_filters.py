import pytest

from ensemble_instruct.filters import check_answer, check_instruction


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Name three birds", "too_short"),  # 3 words: the method rejects <= 3
        ("Name three small birds", None),  # 4 words pass
        (" ".join(["word"] * 150), None),  # 150 words pass
        (" ".join(["word"] * 151), "too_long"),
        ("Describe the image of a sunset briefly.", "keyword:image"),
        ("Describe the Images of a sunset briefly.", "keyword:images"),
        ("Create a MAP of your neighbourhood in words.", "keyword:map"),
        ("Explain how to go to the station from here.", "keyword:go to"),
        ("Summarize the contents of a config file for me.", "keyword:file"),
        ("Explain how a mapping between keys works.", None),  # whole words only: "mapping" is fine
        ("Explain what a profile of a customer holds.", None),  # "profile" contains "file" but is not it
        ("Write a program that prints the primes below 100.", "write_a_program"),
        ("write a program that prints the primes below 100.", None),  # the method's check is case-sensitive
        ("- List three ways to save water.", "leading_punctuation"),
        ("\"Quote\" a famous line about courage.", "leading_punctuation"),
        ("Été: describe a summer day in four words.", "leading_non_ascii"),
        ("3 reasons to learn a second language, please list them.", None),
    ],
)
def test_check_instruction(text, reason):
    assert check_instruction(text) == reason


def test_rules_apply_in_the_method_order():
    # too short wins over the keyword rule
    assert check_instruction("Draw it") == "too_short"
    # a keyword wins over leading punctuation
    assert check_instruction("- Plot the sales for this year.") == "keyword:plot"


@pytest.mark.parametrize(
    ("text", "finish", "reason"),
    [
        ("", "stop", "empty"),
        (" .. !", "stop", "empty"),  # no word left once punctuation goes
        ("Fruit", "stop", None),  # a one-word label taken from the instruction is an answer
        ("The tomato is a fruit", "stop", None),  # 3 of 5 words follow the instruction: below 0.8
        ("A full answer that ran out of room", "length", "truncated"),
        # 8 of its 10 words are the instruction's, in order: a restatement, not an answer
        ("Here's a 10-minute yoga routine for a beginner:", "stop", "repeats_instruction"),
        ("I am sorry. " * 8, "stop", "degenerate_repetition"),  # 24 words, 3 distinct 4-grams of 21
        ("1. Fact\n2. Opinion\n3. Fact\n4. Opinion", "stop", None),  # a numbered list is not a loop
    ],
)
def test_check_answer(text, finish, reason):
    instruction = "Create a 10-minute yoga routine for a beginner. Is a tomato a fruit or a vegetable?"
    assert check_answer(text, instruction, finish) == reason


def test_answer_hygiene_thresholds_are_at_their_edges():
    instruction = "one two three four five six seven eight nine ten"
    assert check_answer("one two three four", instruction) == "repeats_instruction"  # 4 of 4
    assert check_answer("one two three four xx", instruction) == "repeats_instruction"  # 4 of 5 = 0.8
    assert check_answer("one two three four xx yy", instruction) is None  # 4 of 6
    assert check_answer("one two three", instruction) is None  # under 4 words: exempt
    loop = " ".join(["a", "b", "c"] * 8)  # 24 words, 3 distinct 4-grams of 21
    assert check_answer(loop, "x") == "degenerate_repetition"
    assert check_answer(loop[:-2], "x") is None  # 23 words: too short to call a loop
