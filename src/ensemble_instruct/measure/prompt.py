"""The prompt format a tuned model is trained and scored in: the same text at both ends."""

from __future__ import annotations

# A plain instruction/input/response template, no system text: the same for training and evaluation.
PROMPT_FORMAT = "### Instruction:\n{instruction}\n\n[### Input:\n{input}\n\n]### Response:\n{output}<eos>"


def format_prompt(instruction: str, input_text: str = "") -> str:
    """The text before the response; the input block is left out when there is no input."""
    text = f"### Instruction:\n{instruction.strip()}\n\n"
    if input_text.strip():
        text += f"### Input:\n{input_text.strip()}\n\n"
    return text + "### Response:\n"
