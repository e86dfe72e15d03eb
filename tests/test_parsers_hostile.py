"""Model output is hostile input: the parsers never crash and never make a record with an empty field."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_instruct.filters import check_instruction
from ensemble_instruct.prompts import END, ParsedInstance, parse_instance, parse_instructions, parse_output

# text built from the pieces that matter to the parsers, mixed with arbitrary unicode
PIECES = st.sampled_from(["input:", "output:", "instruction:", "Input: ", "OUTPUT:", END, "\n", "\n\n", "\n3. ",
                          "12 . ", " ", ":", "\u00e9t\u00e9", "\u200b", "\U0001f600", "x" * 500])
HOSTILE = st.lists(st.one_of(PIECES, st.text(max_size=40)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(HOSTILE, st.sampled_from(["A", "B"]))
def test_parse_instance_gives_full_fields_or_a_reason(text, task_type):
    parsed = parse_instance(text, task_type)
    if isinstance(parsed, ParsedInstance):
        assert parsed.output.strip()
        assert (parsed.input.strip() != "") == (task_type == "A")
        assert END not in parsed.input + parsed.output
    else:
        assert parsed.startswith("parse_error:")


@settings(max_examples=400, deadline=None)
@given(HOSTILE, st.booleans())
def test_parse_instructions_never_leaks_the_marker(text, truncated):
    pieces = parse_instructions(text, truncated)
    assert pieces  # a split always yields at least one piece
    for piece in pieces:
        assert END not in piece.text and piece.text == piece.text.strip()
        # an accepted piece is never empty
        if check_instruction(piece.text) is None:
            assert piece.text


@settings(max_examples=300, deadline=None)
@given(HOSTILE)
def test_parse_output_is_stripped_and_marker_free(text):
    out = parse_output(text)
    assert END not in out and out == out.strip()


def test_very_long_output_is_kept_whole():
    body = "\n".join(f"line {i}" for i in range(5000))
    parsed = parse_instance(f"input: x\noutput: {body}", "A")
    assert parsed.output.count("\n") == 4999
