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


# --- the Self-Instruct baseline's parsers ------------------------------------------------------------

SI_PIECES = st.sampled_from(["Example 1", "Example 2\n", "Example 6", "Input:", "Output:", "output 2:",
                             "Class label:", "Task:", "\n", "\n\n", " ", ":", "\n9. ", "\u00e9", "\U0001f600"])
SI_HOSTILE = st.lists(st.one_of(SI_PIECES, st.text(max_size=40)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(SI_HOSTILE, st.booleans())
def test_self_instruct_examples_survive_filters_only_when_full(text, output_first):
    from ensemble_instruct.self_instruct_prompts import filter_examples, parse_input_first, parse_output_first

    examples = (parse_output_first if output_first else parse_input_first)(text)
    kept, dropped = filter_examples(examples)
    assert len(kept) + len(dropped) == len(examples)
    for ex in kept:
        assert ex.output.strip() and ex.output == ex.output.strip() and ex.input == ex.input.strip()
        assert ex.input != ex.output and not ex.output.endswith(":") and not ex.input.endswith(":")
        assert "Task:" not in ex.input + ex.output


@settings(max_examples=300, deadline=None)
@given(SI_HOSTILE)
def test_self_instruct_instruction_pieces_are_collapsed(text):
    from ensemble_instruct.self_instruct_prompts import parse_classify, parse_instructions

    for piece in parse_instructions(text):
        assert piece == " ".join(piece.split())
    assert parse_classify(text) in (True, False)
