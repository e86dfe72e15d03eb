"""Prompts and the parsers of what models write back: pure build_*/parse_* pairs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .backends import Message
from .records import Demo

END = "|EoS|"
# Small models echo the end marker with other letters ("|DTS|", "|EOT|"). Such a look-alike, standing as a word
# of its own, ends an instruction as the marker does and is dropped where it ends a line of an answer, so it
# never reaches the data or later prompts ("|Name|Age|" in a table is not one).
_LOOKALIKE = r"(?<!\S)\|[A-Za-z]{2,5}\|(?!\S)"
_ENDS_INSTRUCTION = re.compile(rf"{re.escape(END)}|{_LOOKALIKE}")
_LOOKALIKE_AT_LINE_END = re.compile(rf"[ \t]*{_LOOKALIKE}[ \t]*$", re.MULTILINE)
INSTRUCTION_HEADER = "Come up with a series of tasks:"
INSTANCE_HEADERS = {
    "A": "Each task below comes with one example: an input that suits the instruction, "
    "then the correct output for that input. Write the example for the last task.",
    "B": "Each task below needs no input; it comes with the correct output. Write the output for the last task.",
}
NUMBERED_ITEM = re.compile(r"\n\d+\s?\. ")
_SPACES = re.compile(r"\s+")


def collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def clean_demo_instruction(text: str) -> str:
    """Demos are whitespace-collapsed and stripped, with a trailing colon removed."""
    return collapse(text).rstrip(":").rstrip()


def build_instruction_prompt(demos: Sequence[str]) -> str:
    """The "series of tasks" prompt: numbered demos, each closed by the end marker, then the next number."""
    lines = [INSTRUCTION_HEADER]
    lines += [f"{i}. {clean_demo_instruction(d)} {END}" for i, d in enumerate(demos, start=1)]
    lines.append(f"{len(demos) + 1}.")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    truncated: bool  # the completion hit the token limit inside this piece


def parse_instructions(completion: str, hit_length_limit: bool) -> list[Piece]:
    """Split a completion into candidate instructions; the end marker (or a look-alike) never survives."""
    # within a piece, whatever follows an end marker is not part of the instruction
    out = [Piece(collapse(_ENDS_INSTRUCTION.split(p, 1)[0]), False) for p in NUMBERED_ITEM.split(completion)]
    if hit_length_limit and out:
        out[-1] = Piece(out[-1].text, True)
    return out


def _demo_block(demo: Demo, with_input: bool) -> str:
    lines = [f"instruction: {demo.instruction}"]
    if with_input:
        lines.append(f"input: {demo.input}")
    lines += [f"output: {demo.output}", END]
    return "\n".join(lines)


def build_instance_prompt(task_type: str, demos: Sequence[Demo], instruction: str) -> str:
    """Fixed demos first (a prefix the model caches), the new instruction last."""
    blocks = [INSTANCE_HEADERS[task_type]] + [_demo_block(d, task_type == "A") for d in demos]
    return "\n\n".join(blocks) + f"\n\ninstruction: {instruction}\n"


def build_base_output_prompt(task_type: str, demos: Sequence[Demo], instruction: str, input: str) -> str:
    """Few-shot prompt for a base model's extra output: the instance demos, then the task up to "output:"."""
    head = build_instance_prompt(task_type, demos, instruction)
    return head + (f"input: {input}\n" if task_type == "A" else "") + "output:"


def build_zero_shot(instruction: str, input: str, chat: bool) -> str | list[Message]:
    """The instruction, a newline and the input, as one user turn when the model is a chat model."""
    text = instruction.strip() + ("\n" + input.strip() if input.strip() else "")
    return [{"role": "user", "content": text}] if chat else text


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    input: str
    output: str
    trailing_block: str  # a further "instruction:" block the model ran on into, dropped and logged


def _label_value(line: str, label: str) -> str | None:
    return line[len(label) :].strip() if line.lower().startswith(label) else None


def _next_block_at(lines: list[str]) -> int:
    """Index of the first line of a further "instruction:" block the model ran on into (len(lines) if none)."""
    return next((i for i, line in enumerate(lines) if line.lstrip().lower().startswith("instruction:")), len(lines))


def parse_instance(completion: str, task_type: str) -> ParsedInstance | str:
    """Input and output from a generator's continuation, or the reason it is unusable."""
    lines = _LOOKALIKE_AT_LINE_END.sub("", completion.replace(END, "")).split("\n")
    cut = _next_block_at(lines)
    trailing = "\n".join(lines[cut:]).strip()
    lines = [line.rstrip() for line in lines[:cut]]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return "parse_error:empty"
    first = lines[0].lstrip()
    out_at = next((i for i, line in enumerate(lines) if line.lstrip().lower().startswith("output:")), None)
    if task_type == "A":
        if _label_value(first, "input:") is None:
            return "parse_error:no_input_label"
        if out_at is None or out_at == 0:
            return "parse_error:no_output_label"
        input_lines = [_label_value(first, "input:") or ""] + lines[1:out_at]
        input = "\n".join(input_lines).strip()
    else:
        if out_at != 0:
            return "parse_error:no_output_label"
        if any(line.lstrip().lower().startswith("input:") for line in lines):
            return "parse_error:unexpected_input"
        input = ""
    output_lines = [_label_value(lines[out_at].lstrip(), "output:") or ""] + lines[out_at + 1 :]
    output = "\n".join(output_lines).strip()
    if task_type == "A" and not input:
        return "parse_error:empty_input"
    if not output:
        return "parse_error:empty_output"
    return ParsedInstance(input, output, trailing)


def parse_output(completion: str) -> str:
    """An extra output: the text up to the end marker or a next "instruction:" block, stripped."""
    text = _LOOKALIKE_AT_LINE_END.sub("", completion.split(END, 1)[0])
    lines = text.split("\n")
    cut = _next_block_at(lines)
    return "\n".join(lines[:cut]).strip()
