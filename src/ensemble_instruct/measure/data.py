"""Training data: a run's kept examples, tokenized with the loss on the response only, in an order that is a
function of the optimizer step (so a resumed training sees the same batches)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from ..errors import UserError
from ..paths import RunPaths
from ..store import read_jsonl
from .prompt import format_prompt


def load_examples(run_dir: Path) -> tuple[list[dict[str, str]], str]:
    """The kept examples of a run (instruction, input, output) and a hash of exactly that content."""
    path = RunPaths(run_dir).kept
    if not path.is_file():
        raise UserError(f"{path}: no such file; train reads the kept data set of a generation run")
    examples = []
    for number, record in enumerate(read_jsonl(path), start=1):
        for name in ("instruction", "input", "output"):
            if not isinstance(record.get(name), str):
                raise UserError(f"{path}:{number}: field {name}: missing or not a string")
        examples.append({k: record[k] for k in ("instruction", "input", "output")})
    if not examples:
        raise UserError(f"{path}: holds no kept examples to train on")
    blob = json.dumps(examples, sort_keys=True, ensure_ascii=False)
    return examples, hashlib.sha256(blob.encode()).hexdigest()[:16]


def tokenize_example(tokenizer, example: dict[str, str], max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels (-100 on the prompt, so the loss is on the response only), or None when the
    prompt alone fills max_length."""
    prompt = tokenizer(format_prompt(example["instruction"], example["input"]))["input_ids"]
    response = tokenizer(example["output"].strip(), add_special_tokens=False)["input_ids"]
    ids = (prompt + response + [tokenizer.eos_token_id])[:max_length]
    if len(ids) <= len(prompt):
        return None
    return ids, [-100] * len(prompt) + ids[len(prompt) :]


def example_order(n_examples: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the examples of one optimizer step: epochs are seeded shuffles laid end to end, so the
    order is a function of the step alone and a resumed run sees the same batches."""
    start = step * batch_size
    picked = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n_examples)
        order = list(range(n_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        picked.append(order[offset])
    return picked


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, labels, mask
