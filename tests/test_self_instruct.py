"""The Self-Instruct baseline: its parsers and instance filters on hand-worked text, its pipeline with
scripted models (routing, counts, truncation, resume), and a small real run through the CLI."""

import io
import json
import random
import subprocess
import sys

import pytest
from rich.console import Console

from ensemble_instruct.backends import Completion
from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.prompts import INSTRUCTION_HEADER
from ensemble_instruct.run import run_generation
from ensemble_instruct.self_instruct_prompts import (
    CLASSIFY_HEADER,
    INPUT_FIRST_HEADER,
    Example,
    build_instruction_prompt,
    filter_examples,
    parse_classify,
    parse_input_first,
    parse_instructions,
    parse_output_first,
)
from ensemble_instruct.store import read_jsonl

# --- parsers ----------------------------------------------------------------------------------------


def test_instruction_prompt_has_numbers_and_no_end_marker():
    prompt = build_instruction_prompt(["Name a  colour.", "List three rivers:"])
    assert prompt == f"{INSTRUCTION_HEADER}\n1. Name a colour.\n2. List three rivers\n3."


def test_instructions_are_split_and_capitalized_like_the_recipe():
    completion = " write a haiku about RAIN.\n4. Name the capital of Peru.\n5 .   list   prime numbers below 20"
    assert parse_instructions(completion) == [
        "Write a haiku about rain.",  # str.capitalize lowercases everything after the first letter
        "Name the capital of peru.",
        "List prime numbers below 20",
    ]


@pytest.mark.parametrize("text, expected", [(" Yes", True), ("yes.", True), (" No", False), ("", False),
                                            (" Maybe", False)])
def test_classification_verdict(text, expected):
    assert parse_classify(text) is expected


def test_input_first_examples():
    completion = ("Example 1\nInput: 3, 1, 2\nOutput: 1, 2, 3\n\nExample 2\nInput: b, a\nOutput: a, b\n"
                  "with a second line\n\nExample 3: Input: z\nOutput: z sorted\n")
    assert parse_input_first(completion) == [
        Example("3, 1, 2", "1, 2, 3"), Example("b, a", "a, b\nwith a second line"), Example("z", "z sorted")]


def test_input_first_without_examples_is_one_output():
    assert parse_input_first("Output: Paris is the capital.\n") == [Example("", "Paris is the capital.")]
    assert parse_input_first("Paris is the capital.") == [Example("", "Paris is the capital.")]


def test_input_first_ignores_an_example_without_output_and_the_next_task():
    completion = "Example 1\nInput: hi\nExample 2\nInput: yo\nOutput: YO\n\nTask: Another task\nOutput: no"
    assert parse_input_first(completion) == [Example("yo", "YO")]


def test_output_first_examples():
    completion = "Class label: Spam\nInput: Win a prize now\nClass label: Not spam\nInput: Lunch at noon?\n"
    assert parse_output_first(completion) == [Example("Win a prize now", "Spam"), Example("Lunch at noon?", "Not spam")]
    assert parse_output_first("Class label: Fruit\n") == [Example("", "Fruit")]
    assert parse_output_first("Spam") == []


def test_instance_filters_each_rule():
    kept, dropped = filter_examples([
        Example("a", "b"), Example("x", ""), Example("same", "same"), Example("Note:", "c"),
        Example("d", "Answer:"), Example("a", "b"), Example("e", "f"),
    ])
    assert kept == [Example("a", "b"), Example("e", "f")]
    assert [reason for _, reason in dropped] == [
        "empty_output", "input_equals_output", "ends_with_colon", "ends_with_colon", "duplicate"]


def test_one_input_with_two_outputs_drops_the_whole_task():
    kept, dropped = filter_examples([Example("2+2", "4"), Example("2+2", "5"), Example("1+1", "2")])
    assert kept == []
    assert [reason for _, reason in dropped] == ["conflicting_outputs"] * 3


# --- the pipeline with scripted models --------------------------------------------------------------

TOPICS = ["rivers", "violins", "tax rules", "sourdough", "comets", "elections", "bridges", "sonnets", "fungi",
          "glaciers", "chess", "tides"]


def writer(prompt, params):
    """Instruction lists from the sampling seed; the classification check says yes to "label" tasks;
    instances follow the order the prompt asks for, so each row shows which prompt made it."""
    if prompt.startswith(INSTRUCTION_HEADER):
        rng = random.Random(params.seed)
        items = [f"{rng.choice(['label', 'describe', 'explain'])} {rng.choice(TOPICS)} for reader "
                 f"{rng.randint(1, 10**6)}" for _ in range(3)]
        return items[0] + "".join(f"\n{9 + k}. {item}" for k, item in enumerate(items[1:], start=1))
    task = prompt.rsplit("Task: ", 1)[1].splitlines()[0]
    if prompt.startswith(CLASSIFY_HEADER):
        return " Yes" if task.startswith("Label") else " No"
    if prompt.startswith(INPUT_FIRST_HEADER):
        if task.startswith("Describe"):
            return f"Output: a description of {task}\n\n"
        return "".join(f"Example {k}\nInput: case {k} of {task}\nOutput: answer {k}\n\n" for k in range(1, 8))
    return f"Class label: yes\nInput: a {task} sample\nClass label: no\nInput: another {task} sample\n"


def config(**overrides):
    members = [{"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]}]
    data = {"method": "self-instruct", "members": members, "type_a": {"target": 8}, "type_b": {"target": 4},
            "instructions": {"batch_size": 2}, "exports": ["jsonl"]}
    return build_config({**data, **overrides})


def rows_of(run_dir):
    return list(read_jsonl(run_dir / "data.jsonl"))


def test_self_instruct_run_routes_each_task_to_its_prompt(tmp_path):
    gen = ScriptedBackend([writer], "gen")
    summary = run_generation(config(), tmp_path, backends={"gen": gen})
    rows = rows_of(tmp_path)
    assert len(rows) == 12 == summary["kept"]  # the total of the per-type targets
    per_task: dict[str, int] = {}
    for row in rows:
        prov = row["provenance"]
        verb = row["instruction"].split()[0]
        assert prov["instance"]["classification"] == (verb == "Label")
        assert prov["selection"] == {"method": "single", "chosen_index": 0, "chosen_model": "gen"}
        assert len(prov["candidates"]) == 1 and prov["run"]["method"] == "self-instruct"
        assert len(prov["instruction"]["demo_ids"]) == 8  # 6 seeds + 2 synthetic (seeds fill in at first)
        if verb == "Label":
            assert row["output"] in ("yes", "no") and row["type"] == "A"
        elif verb == "Describe":
            assert row["input"] == "" and row["type"] == "B"
        else:
            assert row["input"].startswith("case ") and row["output"].startswith("answer ")
        per_task[row["instruction"]] = per_task.get(row["instruction"], 0) + 1
    assert max(per_task.values()) <= 5
    assert summary["agreement_rate"] is None  # nothing went through consensus
    rejected = list(read_jsonl(tmp_path / "rejected.jsonl"))
    # the scripted writer gives 7 examples; the stop "Example 6" leaves 5, and no extra is ever kept
    assert not [r for r in rejected if r["reason"] == "over_max_instances"]
    instance_prompts = [p for p in gen.prompts if p.startswith(INPUT_FIRST_HEADER)]
    assert instance_prompts and all("|EoS|" not in p for p in gen.prompts)


def test_self_instruct_progress_counts_both_types_on_its_one_bar(tmp_path):
    screen = io.StringIO()
    run_generation(config(), tmp_path, backends={"gen": ScriptedBackend([writer], "gen")},
                   console=Console(file=screen, width=200))
    types = {row["type"] for row in rows_of(tmp_path)}
    bars = [line for line in screen.getvalue().splitlines() if line.startswith("kept ")]
    assert types == {"A", "B"} and len(bars) == 1 and " 12/12 " in bars[0]


def test_a_completion_cut_by_the_length_limit_is_dropped(tmp_path):
    def cut_lists(prompt, params):
        text = writer(prompt, params)
        if prompt.startswith(INSTRUCTION_HEADER) and params.seed % 2 == 0:
            return Completion(text, finish_reason="length")
        return text

    run_generation(config(), tmp_path, backends={"gen": ScriptedBackend([cut_lists], "gen")})
    rejected = [r for r in read_jsonl(tmp_path / "rejected.jsonl") if r["reason"] == "truncated_completion"]
    assert rejected
    cut = {piece for r in rejected for piece in parse_instructions(r["text"])}
    assert not cut & {row["instruction"] for row in rows_of(tmp_path)}


def prompt_kind(prompt):
    headers = {INSTRUCTION_HEADER: "instructions", CLASSIFY_HEADER: "classify", INPUT_FIRST_HEADER: "input_first"}
    return next((kind for header, kind in headers.items() if prompt.startswith(header)), "output_first")


def test_self_instruct_decoding_follows_the_recipe(tmp_path):
    params_by_kind = {}

    def recording(prompt, params):
        params_by_kind[prompt_kind(prompt)] = params
        return writer(prompt, params)

    run_generation(config(), tmp_path, backends={"gen": ScriptedBackend([recording], "gen")})
    ins = params_by_kind["instructions"]
    assert (ins.temperature, ins.top_p, ins.max_new_tokens, ins.presence_penalty) == (0.7, 0.5, 1024, 2.0)
    assert ins.stop == ("\n\n", "\n16", "16.", "16 .")
    check = params_by_kind["classify"]
    assert (check.temperature, check.max_new_tokens, check.stop) == (0, 3, ("\n", "Task"))
    for kind, limit in (("input_first", 350), ("output_first", 300)):
        p = params_by_kind[kind]
        assert (p.temperature, p.presence_penalty, p.max_new_tokens) == (0, 1.5, limit)
        assert p.stop == ("Example 6", "Task:")


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_a_crashed_self_instruct_run_resumes_to_the_same_data(tmp_path, share):
    whole = tmp_path / "whole"
    gen = ScriptedBackend([writer], "gen")
    run_generation(config(), whole, backends={"gen": gen})
    fail_after = int(share * len(gen.prompts))
    calls = {"n": 0}

    def crashing(prompt, params):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise KeyboardInterrupt
        return writer(prompt, params)

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        run_generation(config(), broken, backends={"gen": ScriptedBackend([crashing], "gen")})
    run_generation(config(), broken, backends={"gen": ScriptedBackend([writer], "gen")})
    assert rows_of(broken) == rows_of(whole)


# --- a real run -------------------------------------------------------------------------------------


def test_self_instruct_with_real_models(tmp_path, qwen_path):
    out = tmp_path / "si"
    cmd = [sys.executable, "-m", "ensemble_instruct", "generate", "--out", str(out), "--method", "self-instruct",
           "-n", "2", "--set", "instructions.batch_size=1", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    rows = rows_of(out)
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == 4 == summary["kept"]
    for row in rows:
        assert row["instruction"] and row["output"] and row["output"] != row["input"]
        assert row["type"] == ("A" if row["input"] else "B")
        assert [c["model"] for c in row["provenance"]["candidates"]] == ["qwen2.5-coder-0.5b"]
    assert set(summary["usage"]) == {"instructions", "instances"}  # no extra outputs in this recipe
