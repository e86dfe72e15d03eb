import pytest

from ensemble_instruct.filters import check_instruction


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
