"""What a stopped run already made, read back by ID, so that a resumed run redoes nothing and asks the models
for exactly the calls an uninterrupted run would have made."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import UserError
from .records import Task

Record = dict[str, Any]


class MemberDown(UserError):
    """A member still failing after its backend's retries; what was finished is already on disk."""

    def __init__(self, member: str, error: str | None) -> None:
        super().__init__(
            f"member {member!r} failed after its retries: {error}; "
            "work so far is saved: run the same command again to resume"
        )


class Finished:
    """The stage records a run found on disk when it started, by ID: instruction rounds by (type, round),
    instance records by task, extra answers by (instance, member). A round's records are forgotten once it is
    decided, so memory stays flat however long the run."""

    def __init__(self, records: dict[str, list[Record]]) -> None:
        self.rounds: dict[tuple[str, int], Record] = {(r["type"], r["round"]): r for r in records["instructions"]}
        self.instances: dict[str, Record] = {r["task_id"]: r for r in records["instances"]}
        self.outputs: dict[tuple[str, str], Record] = {(r["instance_id"], r["member"]): r for r in records["outputs"]}

    def forget(self, task_type: str, round_no: int, tasks: Iterable[Task], members: Iterable[str]) -> None:
        self.rounds.pop((task_type, round_no), None)
        members = list(members)
        for task in tasks:
            record = self.instances.pop(task.id, {})
            for instance in instances_of(record):
                for member in members:
                    self.outputs.pop((instance["id"], member), None)


def instances_of(record: Record) -> list[Record]:
    """The instances an instance-stage record holds: one ("instance"), several (the Self-Instruct recipe's
    "instances"), or none (a rejection)."""
    return record.get("instances", [record["instance"]] if "instance" in record else [])


def unfinished_groups(
    tasks: Sequence[Task], writer_of: Callable[[Task], str], finished: dict[str, Any]
) -> dict[str, list[Task]]:
    """Tasks grouped by the member that writes them, for the groups with a task not yet finished. Such a
    group is asked for whole, even when part of it is on disk: a backend may decode a call's prompts as
    one batch, whose outputs depend on every prompt in it, so a resumed run must ask for the same calls
    as an uninterrupted one (and it keeps what was stored before)."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(writer_of(task), []).append(task)
    return {writer: group for writer, group in groups.items() if any(t.id not in finished for t in group)}


WriteGroup = Callable[[list[Task], str], Iterable[tuple[Task, Record]]]


def write_instances(
    tasks: Sequence[Task],
    writer_of: Callable[[Task], str],
    finished: dict[str, Record],
    write_group: WriteGroup,
    new: Callable[[Record], None],
) -> list[Record]:
    """Stage 2 for every recipe: each writer's group with an unfinished task is written whole (write_group,
    which raises MemberDown when its writer fails: a task without a record is asked for again on resume);
    each record not on disk yet goes to `new`. Returns the tasks' records in task order."""
    for writer, group in unfinished_groups(tasks, writer_of, finished).items():
        for task, record in write_group(group, writer):
            if task.id not in finished:
                new(record)
                finished[task.id] = record
    return [finished[task.id] for task in tasks]
