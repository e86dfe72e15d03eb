"""Held-out tasks with references, and the metric: SuperNI's Rouge-L, per task and overall."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import rouge
from ..errors import UserError

METRIC = "rouge_score rougeL F-measure, use_stemmer=True, default tokenizer; max over references, mean, x100"


@dataclass(frozen=True)
class EvalItem:
    task: str
    instruction: str
    input: str
    references: tuple[str, ...]


def _field(path: Path, number: int, record: dict[str, Any], name: str, kind: type) -> Any:
    value = record.get(name)
    if value is None:
        raise UserError(f"{path}:{number}: field {name}: missing")
    if not isinstance(value, kind):
        raise UserError(f"{path}:{number}: field {name}: must be a {kind.__name__}")
    return value


def _items_of(path: Path, number: int, record: dict[str, Any]) -> list[EvalItem]:
    """One line in either shape: SuperNI-like (definition, input, references) or user-oriented
    (instruction, instances: [{input, output}])."""
    if "definition" in record:
        refs = _field(path, number, record, "references", list)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise UserError(f"{path}:{number}: field references: must be a non-empty list of strings")
        task = record.get("task") or record.get("id") or f"line {number}"
        return [
            EvalItem(
                str(task),
                _field(path, number, record, "definition", str),
                _field(path, number, record, "input", str),
                tuple(refs),
            )
        ]
    if "instruction" in record or "instances" in record:
        instruction = _field(path, number, record, "instruction", str)
        instances = _field(path, number, record, "instances", list)
        task = str(record.get("task") or record.get("id") or f"line {number}")
        items = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise UserError(f"{path}:{number}: field instances[{i}]: must be an object")
            for name in ("input", "output"):
                if not isinstance(instance.get(name), str):
                    raise UserError(f"{path}:{number}: field instances[{i}].{name}: missing or not a string")
            items.append(EvalItem(task, instruction, instance["input"], (instance["output"],)))
        return items
    raise UserError(f"{path}:{number}: field definition: missing (or instruction and instances)")


def load_tasks(path: Path) -> list[EvalItem]:
    """Every evaluation item of a JSONL task file; errors name the file, the line and the field."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such task file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    items: list[EvalItem] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: must be a JSON object")
        items.extend(_items_of(path, number, record))
    if not items:
        raise UserError(f"{path}: holds no evaluation items")
    return items


def select(items: list[EvalItem], limit: int | None) -> list[int]:
    """Indices of the items to score: all, or the first `limit` taken in turn from each task, so a small
    limit still covers every task."""
    if limit is None or limit >= len(items):
        return list(range(len(items)))
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_task[item.task].append(index)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for indices in by_task.values():
            if depth < len(indices) and len(chosen) < limit:
                chosen.append(indices[depth])
        depth += 1
    return sorted(chosen)


def rouge_l(prediction: str, references: tuple[str, ...] | list[str]) -> float:
    """Rouge-L F-measure (stemmed) of a prediction against its best reference, in 0..1 (float-equal to
    rouge_score's, see rouge.py)."""
    return max(rouge.rouge_l(ref, prediction, stem=True) for ref in references)


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def score(items: list[EvalItem], indices: list[int], answers: dict[int, str]) -> dict[str, Any]:
    """Per-task and overall mean Rouge-L x100 of the chosen items, and each item's score in their order (what
    a paired comparison of two models resamples)."""
    every = [rouge_l(answers[i], items[i].references) for i in indices]
    per_task: dict[str, list[float]] = defaultdict(list)
    for i, value in zip(indices, every):
        per_task[items[i].task].append(value)
    return {
        "overall": round(100 * sum(every) / len(every), 2),
        "n": len(every),
        "tasks": {t: {"rougeL": round(100 * sum(s) / len(s), 2), "n": len(s)} for t, s in per_task.items()},
        "items": [round(100 * value, 2) for value in every],
    }
