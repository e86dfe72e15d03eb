"""The records that flow between stages. Their JSON field names are the public schema."""

from __future__ import annotations

import hashlib
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any


def stable_id(*parts: str, prefix: str = "") -> str:
    """An ID from content, never from position: the same task gets the same ID in every run."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]
    return prefix + digest


def derive_seed(*parts: object) -> int:
    """A per-item sampling seed from the run seed and the item's identity (stable under resume)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class SeedTask:
    id: str
    instruction: str
    instances: tuple[tuple[str, str], ...]  # (input, output) pairs
    name: str = ""
    is_classification: bool = False

    @property
    def type(self) -> str:
        """A needs an input, B does not; decided by the first instance, as the method does."""
        return "A" if self.instances and self.instances[0][0].strip() else "B"


@dataclass(frozen=True, slots=True)
class Demo:
    """A fixed few-shot example for writing instances and for base models' outputs."""

    type: str
    instruction: str
    input: str
    output: str
    seed_id: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """An accepted synthetic instruction and why it was accepted."""

    id: str
    type: str
    instruction: str
    model: str
    demo_ids: list[str]
    novelty_max: float
    nearest: str | None
    top_similar: list[tuple[str, float]]
    novelty_mean: float | None = None

    @classmethod
    def new(cls, task_type: str, instruction: str, **fields: Any) -> Task:
        return cls(
            id=stable_id(task_type, instruction, prefix=f"{task_type}-"),
            type=task_type,
            instruction=instruction,
            **fields,
        )


@dataclass(frozen=True, slots=True)
class Instance:
    """One input/output pair for a task, written by the generator model (candidate 0)."""

    id: str
    task_id: str
    type: str
    instruction: str
    input: str
    output: str
    model: str
    raw_completion: str

    @classmethod
    def new(cls, task: Task, input: str, output: str, model: str, raw: str, task_type: str | None = None) -> Instance:
        task_type = task_type or task.type
        return cls(
            id=stable_id(task_type, task.instruction, input, prefix=f"{task_type}-"),
            task_id=task.id,
            type=task_type,
            instruction=task.instruction,
            input=input,
            output=output,
            model=model,
            raw_completion=raw,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    index: int
    model: str
    role: str  # "generator" | "extra"
    prompt_mode: str  # "few_shot" | "zero_shot"
    text: str
    error: str | None = None
    finish_reason: str = "stop"  # "length": the answer was cut at the token limit


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an item was dropped: the stage, a reason such as "keyword:map", and what supports it."""

    stage: str  # instruction_filter | novelty | instance_parse | ensemble | backend
    item_id: str
    reason: str
    _: KW_ONLY
    type: str
    text: str = ""
    model: str = ""
    score: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def to_json(record: Any) -> dict[str, Any]:
    return asdict(record)


def task_from_json(data: dict[str, Any]) -> Task:
    data = dict(data)
    data["top_similar"] = [tuple(x) for x in data["top_similar"]]
    return Task(**data)


def usage_of(completions: Any) -> dict[str, float]:
    """Token and time totals of some completions, stored with each stage record."""
    return {
        "calls": len(completions),
        "prompt_tokens": sum(c.prompt_tokens for c in completions),
        "completion_tokens": sum(c.completion_tokens for c in completions),
        "cached_tokens": sum(c.cached_tokens for c in completions),
        "seconds": round(sum(c.seconds for c in completions), 4),
        "faults": sum(sum(c.faults.values()) for c in completions),
    }
