"""What every recipe of a run shares: the configuration, the store and the members, who does what, the work
an earlier run finished, and how instruction rounds and kept examples are recorded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import __version__
from .backends import Backend
from .config import RunConfig
from .ensemble import Decision
from .instructions import InstructionPool, Round
from .models import answering_members, has_restricted_terms
from .records import Candidate, Demo, Instance, SeedTask, Task, task_from_json, to_json
from .replay import Finished, MemberDown
from .seeds import split_by_type
from .store import RunStore

Event = Callable[[str, dict[str, Any]], None]
Unsaved = list[tuple[str, dict[str, Any]]]  # (stage, record) made new and not stored yet


def no_event(kind: str, data: dict[str, Any]) -> None:
    pass


@dataclass
class Draft:
    """A round as the generator left it: its record, accepted tasks, valid instances, the rejections of
    the others and the stage records not stored yet; or, when stalled, the sign that its type reached
    the attempt cap."""

    type: str
    round: int
    target: int
    record: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    unsaved: Unsaved = field(default_factory=list)
    stalled: bool = False


class RunContext:
    """One run's shared state. Every stage result is looked up in `finished` before it is made, so a rerun
    replays finished work from disk and continues where the last run stopped."""

    def __init__(
        self,
        cfg: RunConfig,
        store: RunStore,
        backends: dict[str, Backend],
        seeds: Sequence[SeedTask],
        demos: dict[str, list[Demo]],
        on_event: Event = no_event,
    ) -> None:
        self.cfg, self.store, self.backends, self.demos, self.on_event = cfg, store, backends, demos, on_event
        self.seeds = list(seeds)
        self.seeds_by_type = split_by_type(self.seeds)
        self.members = {m.name: m for m in cfg.members}
        self.restricted = {m.name for m in cfg.members if has_restricted_terms(m)}
        self.finished = Finished(store.take_finished())
        self.tasks: dict[str, Task] = {}  # the accepted tasks of the rounds not decided yet
        self.down: set[str] = set()  # extra members dropped after failing (on_member_failure: continue)

    # --- who does what ------------------------------------------------------------------------------

    def writer_for_round(self, round_no: int) -> str:
        writers = self.cfg.members_with("instructions")
        return writers[round_no % len(writers)].name

    def instance_writer(self, task: Task) -> str:
        """The method's generator writes both the instruction and its instance, when it may."""
        if "instances" in self.members[task.model].roles:
            return task.model
        return self.cfg.members_with("instances")[0].name

    def extras_for(self, generator: str) -> list[str]:
        return [m.name for m in answering_members(self.cfg) if m.name != generator and m.name not in self.down]

    # --- instruction rounds -------------------------------------------------------------------------

    def draft_round(
        self, task_type: str, round_no: int, pool: InstructionPool, make: Callable[[str], Round], unsaved: Unsaved
    ) -> tuple[dict[str, Any], list[Task]]:
        """A round's record and accepted tasks, replayed from disk or made now by `make(writer)` (then added to
        unsaved). A round whose writer failed is not saved: a resume asks for it again."""
        stored = self.finished.rounds.get((task_type, round_no))
        if stored is None:
            result = make(self.writer_for_round(round_no))
            if failed := next((r for r in result.rejections if r.reason == "backend_error"), None):
                raise MemberDown(result.writer, failed.detail.get("error"))
            stored = {**asdict(result), "stage": "instructions"}
            unsaved.append(("instructions", stored))
            tasks = result.tasks
        else:  # replay: the accepted instructions join the pool in their original order
            tasks = [task_from_json(x) for x in stored["tasks"]]
            for task in tasks:
                pool.add(task.instruction)
        self.tasks.update((task.id, task) for task in tasks)
        return stored, tasks

    def publish(self, draft: Draft, with_instances: bool = True) -> None:
        """A drafted round is used: its new stage records are stored, its drops go into the log and its
        counts to the progress view."""
        for stage, record in draft.unsaved:
            self.store.append(stage, record)
        for r in (*draft.record["rejections"], *draft.rejections):
            self.store.add_rejection(r)
        self.on_event(
            "instructions", {"type": draft.type, "candidates": draft.record["candidates"], "accepted": len(draft.tasks)}
        )
        if with_instances:
            self.on_event("instances", {"done": len(draft.tasks), "valid": len(draft.instances)})

    def forget(self, task_type: str, round_no: int, tasks: list[Task]) -> None:
        """Drop a decided round's records from memory; they are on disk."""
        self.finished.forget(task_type, round_no, tasks, self.members)
        for task in tasks:
            self.tasks.pop(task.id, None)

    # --- kept examples ------------------------------------------------------------------------------

    def keep(
        self, inst: Instance, cands: list[Candidate], decision: Decision, instance_facts: dict[str, Any] | None = None
    ) -> int:
        """Store a kept example with its provenance and announce the decision (the progress bars count it)."""
        task = self.tasks[inst.task_id]
        chosen = cands[decision.chosen or 0]  # a kept decision always names its choice
        authors = {task.model, inst.model, chosen.model}
        self.store.add_kept(
            {
                "id": inst.id,
                "type": inst.type,
                "instruction": inst.instruction,
                "input": inst.input,
                "output": chosen.text,
                "provenance": {
                    "instruction": {
                        "model": task.model,
                        "demo_ids": task.demo_ids,
                        "novelty_max": task.novelty_max,
                        "nearest": task.nearest,
                        "top_similar": task.top_similar,
                    },
                    "instance": {"model": inst.model, "raw_completion": inst.raw_completion, **(instance_facts or {})},
                    "candidates": stored_candidates(cands, decision),
                    "pairwise_rougeL": decision.pairwise,
                    "selection": {
                        "method": decision.reason,
                        "chosen_index": chosen.index,
                        "chosen_model": chosen.model,
                    },
                    "restricted_terms": sorted(authors & self.restricted),
                    "run": {
                        "method": self.cfg.method,
                        "config_hash": self.cfg.content_hash(),
                        "seed": self.cfg.seed,
                        "version": __version__,
                    },
                },
            }
        )
        self.on_event("decided", {"type": inst.type, "kept": True})
        return 1


def stored_candidates(cands: list[Candidate], decision: Decision) -> list[dict[str, Any]]:
    """The candidates as stored: each with the reason it did not vote (None when it did)."""
    return [{**to_json(c), "dropped": decision.dropped.get(c.index)} for c in cands]
