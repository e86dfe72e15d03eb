"""Prompts and parsers of the Self-Instruct baseline (METHOD §8), with the project's own demo texts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .prompts import INSTRUCTION_HEADER, NUMBERED_ITEM, clean_demo_instruction, collapse
from .records import Demo

# Self-Instruct asks for up to 16 tasks; these stop a completion at the 16th.
INSTRUCTION_STOPS = ("\n\n", "\n16", "16.", "16 .")
CLASSIFY_STOPS = ("\n", "Task")
INSTANCE_STOPS = ("Example 6", "Task:")

CLASSIFY_HEADER = (
    "Decide whether each task is a classification task: one whose answer is a label from a small, fixed set of labels."
)
INPUT_FIRST_HEADER = (
    "Write examples for each task. A task that needs an input gets one or more examples, "
    "each an input followed by its output. A task that needs no input gets its output directly."
)
OUTPUT_FIRST_HEADER = (
    "Each task below is a classification task. Write a class label first, then an input "
    "that belongs to that label; do this for as many labels as the task has."
)


def build_instruction_prompt(demos: Sequence[str]) -> str:
    """The same numbered list as the main method, without end markers."""
    lines = [INSTRUCTION_HEADER]
    lines += [f"{i}. {clean_demo_instruction(d)}" for i, d in enumerate(demos, start=1)]
    lines.append(f"{len(demos) + 1}.")
    return "\n".join(lines)


def parse_instructions(completion: str) -> list[str]:
    """Numbered pieces, whitespace-collapsed and passed through str.capitalize() as the recipe does
    (which also lowercases everything after the first letter)."""
    return [collapse(p).capitalize() for p in NUMBERED_ITEM.split(completion)]


def build_classify_prompt(demos: Sequence[tuple[str, bool]], instruction: str) -> str:
    blocks = [CLASSIFY_HEADER]
    blocks += [f"Task: {collapse(text)}\nIs it classification? {'Yes' if yes else 'No'}" for text, yes in demos]
    blocks.append(f"Task: {collapse(instruction)}\nIs it classification?")
    return "\n\n".join(blocks)


def parse_classify(completion: str) -> bool:
    return completion.strip().lower().startswith("yes")


def _input_first_block(demo: Demo) -> str:
    if demo.input:
        return f"Task: {demo.instruction}\nExample 1\nInput: {demo.input}\nOutput: {demo.output}"
    return f"Task: {demo.instruction}\nOutput: {demo.output}"


def build_input_first_prompt(demos: Sequence[Demo], instruction: str) -> str:
    blocks = [INPUT_FIRST_HEADER] + [_input_first_block(d) for d in demos]
    return "\n\n".join(blocks) + f"\n\nTask: {instruction}\n"


def build_output_first_prompt(demos: Sequence[Demo], instruction: str) -> str:
    blocks = [OUTPUT_FIRST_HEADER]
    blocks += [f"Task: {d.instruction}\nClass label: {d.output}\nInput: {d.input}" for d in demos]
    return "\n\n".join(blocks) + f"\n\nTask: {instruction}\n"


@dataclass(frozen=True, slots=True)
class Example:
    input: str
    output: str


_EXAMPLE = re.compile(r"^[ \t]*Example\s*\d+\s*[:.]?[ \t]*", re.MULTILINE | re.IGNORECASE)
_OUTPUT = re.compile(r"^[ \t]*Output\s*\d*\s*:", re.MULTILINE | re.IGNORECASE)
_INPUT = re.compile(r"^[ \t]*Input\s*\d*\s*:", re.IGNORECASE)
_LABEL = re.compile(r"^[ \t]*Class label\s*:", re.MULTILINE | re.IGNORECASE)
_LABELLED_INPUT = re.compile(r"^[ \t]*Input\s*:", re.MULTILINE | re.IGNORECASE)


def _before_next_task(completion: str) -> str:
    return completion.split("Task:", 1)[0]


def parse_input_first(completion: str) -> list[Example]:
    """`Example n / Input: / Output:` blocks; a completion with no example header is one example,
    with no input when it has no "Input:" label."""
    text = _before_next_task(completion)
    blocks = _EXAMPLE.split(text)
    if len(blocks) > 1:
        blocks = blocks[1:]  # whatever precedes "Example 1" is not an example
    out = []
    for block in blocks:
        found = _OUTPUT.search(block)
        if found is None:
            if len(blocks) == 1:
                out.append(Example("", block.strip()))
            continue
        input = _INPUT.sub("", block[: found.start()].strip(), count=1).strip()
        out.append(Example(input, block[found.end() :].strip()))
    return out


def parse_output_first(completion: str) -> list[Example]:
    """`Class label: / Input:` pairs; the label is the output, the text after "Input:" the input."""
    out = []
    for block in _LABEL.split(_before_next_task(completion))[1:]:
        found = _LABELLED_INPUT.search(block)
        label = block[: found.start()] if found else block
        input = block[found.end() :] if found else ""
        out.append(Example(input.strip(), label.strip()))
    return out


def filter_examples(examples: Sequence[Example]) -> tuple[list[Example], list[tuple[Example, str]]]:
    """The recipe's instance filters: kept examples, and each dropped one with its reason."""
    kept: list[Example] = []
    dropped: list[tuple[Example, str]] = []
    for ex in examples:
        if not ex.output:
            dropped.append((ex, "empty_output"))
        elif ex.input == ex.output:
            dropped.append((ex, "input_equals_output"))
        elif ex.input.endswith(":") or ex.output.endswith(":"):
            dropped.append((ex, "ends_with_colon"))
        elif ex in kept:
            dropped.append((ex, "duplicate"))
        else:
            kept.append(ex)
    outputs_by_input: dict[str, set[str]] = {}
    for ex in kept:
        outputs_by_input.setdefault(ex.input, set()).add(ex.output)
    if any(len(outputs) > 1 for outputs in outputs_by_input.values()):
        dropped += [(ex, "conflicting_outputs") for ex in kept]
        kept = []
    return kept, dropped
