from ensemble_instruct.prompts import (
    END,
    build_base_output_prompt,
    build_instance_prompt,
    build_instruction_prompt,
    build_zero_shot,
    parse_instance,
    parse_instructions,
    parse_output,
)
from ensemble_instruct.records import Demo


def test_instruction_prompt_shape():
    prompt = build_instruction_prompt(["Suggest names  for a\ntortoise:", "Explain why bread goes stale."])
    assert prompt == (
        "Come up with a series of tasks:\n"
        "1. Suggest names for a tortoise |EoS|\n"
        "2. Explain why bread goes stale. |EoS|\n"
        "3."
    )


def test_parse_instructions_splits_numbered_items_and_drops_the_marker():
    pieces = parse_instructions(" Name a  colour. |EoS|\n5. List two fruits.\n6 . Say hi", hit_length_limit=True)
    assert [p.text for p in pieces] == ["Name a colour.", "List two fruits.", "Say hi"]
    assert [p.truncated for p in pieces] == [False, False, True]
    assert all(END not in p.text for p in pieces)


def test_text_after_an_end_marker_is_dropped():
    assert [p.text for p in parse_instructions("Do this. |EoS| and more", False)] == ["Do this."]


DEMOS = [Demo("A", "Add the numbers.", "2 3", "5"), Demo("A", "Reverse the word.", "cat", "tac")]


def test_instance_prompt_ends_with_the_new_instruction():
    prompt = build_instance_prompt("A", DEMOS, "Double the number.")
    assert prompt.endswith("\n\ninstruction: Double the number.\n")
    assert "instruction: Add the numbers.\ninput: 2 3\noutput: 5\n|EoS|\n\n" in prompt
    base = build_base_output_prompt("A", DEMOS, "Double the number.", "4")
    assert base.endswith("instruction: Double the number.\ninput: 4\noutput:")


def test_type_b_prompts_have_no_input():
    demos = [Demo("B", "Name a prime.", "", "7")]
    assert "input:" not in build_instance_prompt("B", demos, "Name a colour.")
    assert build_base_output_prompt("B", demos, "Name a colour.", "").endswith("instruction: Name a colour.\noutput:")


def test_zero_shot_prompt():
    assert build_zero_shot(" Add. ", " 2 3 ", chat=False) == "Add.\n2 3"
    assert build_zero_shot("Greet me.", "", chat=True) == [{"role": "user", "content": "Greet me."}]


def test_parse_type_a_keeps_multiline_fields():
    parsed = parse_instance("input: line one\nline two\noutput: first\nsecond\n|EoS|", "A")
    assert (parsed.input, parsed.output, parsed.trailing_block) == ("line one\nline two", "first\nsecond", "")


def test_parse_cuts_a_trailing_block():
    parsed = parse_instance("input: 4\noutput: 8\ninstruction: Another task\ninput: x", "A")
    assert (parsed.input, parsed.output) == ("4", "8")
    assert parsed.trailing_block.startswith("instruction: Another task")


def test_parse_errors():
    assert parse_instance("", "A") == "parse_error:empty"
    assert parse_instance("output: 5", "A") == "parse_error:no_input_label"
    assert parse_instance("input: 5", "A") == "parse_error:no_output_label"
    assert parse_instance("input: \noutput: 5", "A") == "parse_error:empty_input"
    assert parse_instance("input: 5\noutput:   ", "A") == "parse_error:empty_output"
    assert parse_instance("input: 5\noutput: 6", "B") == "parse_error:no_output_label"
    assert parse_instance("output: 6\ninput: 5", "B") == "parse_error:unexpected_input"


def test_parse_type_b():
    parsed = parse_instance("\n output: Blue.\nAlso green.", "B")
    assert (parsed.input, parsed.output) == ("", "Blue.\nAlso green.")


def test_parse_output_stops_at_marker_and_next_block():
    assert parse_output(" 8 |EoS| junk") == "8"
    assert parse_output("8\ninstruction: next") == "8"


def test_an_end_marker_look_alike_never_reaches_an_instruction_or_an_answer():
    # seen in a real run: the generator closed items with "|DTS|" and ended an answer with it
    pieces = parse_instructions(" What is a startup? |DTS|\n5. Explain gravity. |EOT| more", False)
    assert [p.text for p in pieces] == ["What is a startup?", "Explain gravity."]
    assert parse_output("A startup is young.\n|DTS|") == "A startup is young."
    parsed = parse_instance("input: a b\noutput: b a |DTS|\n", "A")
    assert (parsed.input, parsed.output) == ("a b", "b a")


def test_pipes_inside_text_are_not_taken_for_a_marker():
    table = "|Name|Age|\n|Ann|31|"
    assert parse_output(table) == table
    assert parse_output("Use a || b, or |x|.") == "Use a || b, or |x|."
    assert [p.text for p in parse_instructions(" Fill in |Name|Age| for each row.", False)] == [
        "Fill in |Name|Age| for each row."]
