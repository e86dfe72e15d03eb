"""Seed tasks: load and validate a seed file, and split it into the two task types."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .errors import UserError
from .records import Demo, SeedTask

DEFAULT = "default"


def data_path(name: str) -> Path:
    return Path(str(resources.files("ensemble_instruct") / "data" / name))


class SeedError(UserError):
    """Every problem found in a seed file, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such seed file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a JSONL seed file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def _parse_task(obj: object, where: str, problems: list[str]) -> SeedTask | None:
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    bad = len(problems)
    for key, kind in (("id", str), ("instruction", str), ("instances", list)):
        if key not in obj:
            problems.append(f"{where}: field {key}: missing")
        elif not isinstance(obj[key], kind):
            problems.append(f"{where}: field {key}: expected {kind.__name__}, got {type(obj[key]).__name__}")
    if len(problems) > bad:
        return None
    if not obj["id"].strip():
        problems.append(f"{where}: field id: empty")
    if not obj["instruction"].strip():
        problems.append(f"{where}: field instruction: empty")
    if not obj["instances"]:
        problems.append(f"{where}: field instances: empty list, need at least one instance")
    pairs = []
    for i, inst in enumerate(obj["instances"]):
        field = f"instances[{i}]"
        if not isinstance(inst, dict) or not isinstance(inst.get("output"), str):
            problems.append(f"{where}: field {field}.output: missing or not a string")
        elif not isinstance(inst.get("input", ""), str):
            problems.append(f"{where}: field {field}.input: not a string")
        elif not inst["output"].strip():
            problems.append(f"{where}: field {field}.output: empty")
        else:
            pairs.append((inst.get("input", ""), inst["output"]))
    if len(problems) > bad:
        return None
    return SeedTask(
        id=obj["id"],
        instruction=obj["instruction"].strip(),
        instances=tuple(pairs),
        name=str(obj.get("name", "")),
        is_classification=bool(obj.get("is_classification", False)),
    )


def load_seeds(path: str | Path = DEFAULT) -> list[SeedTask]:
    """Read a Self-Instruct-shaped JSONL seed file; raise SeedError listing every problem."""
    path = data_path("seed_tasks.jsonl") if str(path) == DEFAULT else Path(path)
    problems: list[str] = []
    tasks: list[SeedTask] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: invalid JSON ({err.msg} at column {err.colno})")
            continue
        task = _parse_task(obj, where, problems)
        if task is None:
            continue
        if task.id in first_line:
            problems.append(f"{where}: field id: duplicate {task.id!r} (first on line {first_line[task.id]})")
            continue
        first_line[task.id] = number
        tasks.append(task)
    if not problems:
        if not tasks:
            problems.append(f"{path}: no seed tasks")
        else:
            for kind, label in (("A", "type A (with input)"), ("B", "type B (no input)")):
                if not any(t.type == kind for t in tasks):
                    problems.append(f"{path}: no tasks of {label}; both types are needed")
    if problems:
        raise SeedError(problems)
    return tasks


def split_by_type(tasks: list[SeedTask]) -> dict[str, list[SeedTask]]:
    return {kind: [t for t in tasks if t.type == kind] for kind in ("A", "B")}


def load_demos(path: str | Path = DEFAULT) -> dict[str, list[Demo]]:
    """The fixed instance-writing demos, by type."""
    path = data_path("instance_demos.jsonl") if str(path) == DEFAULT else Path(path)
    demos: dict[str, list[Demo]] = {"A": [], "B": []}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            demo = Demo(obj["type"], obj["instruction"], obj.get("input", ""), obj["output"], obj.get("seed_id", ""))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path}:{number}: bad demo ({type(err).__name__}: {err})") from None
        if demo.type not in demos:
            raise UserError(f"{path}:{number}: field type: must be 'A' or 'B'")
        demos[demo.type].append(demo)
    return demos
