"""Wires the stages together for each task type, and resumes from the run directory by ID."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from . import __version__
from .backends import Backend, cancel_event
from .config import MemberConfig, RunConfig
from .ensemble import Decision, decide
from .errors import UserError
from .instances import generate_instances
from .instructions import InstructionPool, Round, generate_round
from .models import has_restricted_terms, member_kind
from .outputs import generate_outputs
from .prefetch import Prefetch
from .records import Candidate, Demo, Instance, Rejection, SeedTask, Task, task_from_json, to_json, usage_of
from .seeds import split_by_type
from .store import RunStore

Event = Callable[[str, dict[str, Any]], None]


def _no_event(kind: str, data: dict[str, Any]) -> None:
    pass


class MemberDown(UserError):
    """A member still failing after its backend's retries; what was finished is already on disk."""

    def __init__(self, member: str, error: str | None) -> None:
        super().__init__(f"member {member!r} failed after its retries: {error}; "
                         "work so far is saved: run the same command again to resume")


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
    unsaved: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (stage, record) made new
    stalled: bool = False


class Progress:
    """Kept examples and decided rounds per type, shared by the deciding thread and the drafting ones.

    Drafting stops running ahead on a type once the rounds already drafted for it are expected to meet its
    target (at the keep rate of its decided rounds): a round drafted after its type is done is thrown away,
    and with two stages running ahead that was up to two rounds per type. Which rounds are drafted when
    changes no record, only the order in which the types' rounds are made."""

    def __init__(self, targets: dict[str, int]) -> None:
        self.targets = targets
        self.kept = {t: 0 for t in targets}
        self.rounds = {t: 0 for t in targets}
        self.stopped = False
        self._changed = threading.Condition()

    def decided(self, t: str, kept: int) -> None:
        with self._changed:
            self.kept[t] += kept
            self.rounds[t] += 1
            self._changed.notify_all()

    def enough_in_flight(self, t: str, drafted: int) -> bool:
        pending, rounds = drafted - self.rounds[t], self.rounds[t]
        return rounds > 0 and pending * self.kept[t] / rounds >= self.targets[t] - self.kept[t]

    def stop(self) -> None:
        """No more decisions will come: the run ended or was interrupted."""
        with self._changed:
            self.stopped = True
            self._changed.notify_all()

    def wait(self) -> bool:
        """Wait a moment for a decision; False once no more will come or the waiting thread is told to stop."""
        with self._changed:
            if not self.stopped:
                self._changed.wait(timeout=0.1)
        stop = cancel_event.get()
        return not (self.stopped or (stop and stop.is_set()))


class Pipeline:
    """One generation run. Every stage result is looked up in the store before it is computed, so a
    re-run replays finished work from disk and continues where the last run stopped."""

    # False for a baseline to measure against: the generator drafts the next round only after the current
    # one is decided, and the extra members answer one after another
    parallel_extras = True

    def __init__(self, cfg: RunConfig, store: RunStore, backends: dict[str, Backend], seeds: Sequence[SeedTask],
                 demos: dict[str, list[Demo]], on_event: Event = _no_event) -> None:
        self.cfg, self.store, self.backends, self.demos = cfg, store, backends, demos
        self.seeds = split_by_type(list(seeds))
        self.on_event = on_event
        self.members = {m.name: m for m in cfg.members}
        self.restricted = {m.name for m in cfg.members if has_restricted_terms(m)}
        # finished work, looked up by ID and forgotten once its tasks are decided (memory stays flat)
        finished = store.take_finished()
        self._rounds = {(r["type"], r["round"]): r for r in finished["instructions"]}
        self._instances = {r["task_id"]: r for r in finished["instances"]}
        self._outputs = {(r["instance_id"], r["member"]): r for r in finished["outputs"]}
        self._tasks: dict[str, Task] = {}
        self.down: set[str] = set()  # extra members dropped after failing (on_member_failure: continue)
        self._progress = Progress({t: cfg.type_config(t).target for t in cfg.types})
        self._check_counts()

    def _check_counts(self) -> None:
        for t in self.cfg.types:
            need = self.cfg.type_config(t).seed_demos + self.cfg.type_config(t).synthetic_demos
            if len(self.seeds[t]) < need:
                raise UserError(f"seeds: {len(self.seeds[t])} tasks of type {t}, the prompt needs {need} demos")
            if len(self.demos[t]) < self.cfg.type_config(t).instance_demos:
                raise UserError(f"instance demos: {len(self.demos[t])} of type {t}, "
                                f"instance_demos asks for {self.cfg.type_config(t).instance_demos}")
        if self.cfg.ensemble and not self.extras_for(self.cfg.members_with("instances")[0].name):
            raise UserError("members: ensembling needs another member with the 'outputs' role "
                            "(or run with --no-ensemble)")

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
        wanted = self.cfg.consensus.extras
        return [m.name for m in self.cfg.members_with("outputs") if m.name != generator and m.name not in self.down
                and (wanted == "all" or member_kind(m) == wanted)]

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> None:
        """Rounds of each type in turn until its target is met, in three stages that overlap: the
        generator writes the instructions of one round and the instances of the round before, while the
        other members answer the round before that. A drafted round is written to the run directory only
        when it is used, so what a run stores, keeps and logs does not depend on timing: a round drafted
        after its type was done leaves no trace."""
        done: set[str] = set()
        with Prefetch(lambda: self._drafts(done), depth=self._ahead()) as drafts:
            try:
                for draft in drafts:
                    self._use(draft, done)
            finally:
                self._progress.stop()  # a drafting thread waiting for a decision ends before the run does

    def _use(self, draft: Draft, done: set[str]) -> None:
        """Publish and decide a drafted round, unless its type is done already."""
        t, kept = draft.type, self._progress.kept
        if t in done:
            return
        if draft.stalled:
            done.add(t)
            self.on_event("type_done", {"type": t, "kept": kept[t], "target": draft.target, "stalled": True})
            return
        self._publish(draft)
        self._progress.decided(t, self._decide_all(draft.instances, draft.target - kept[t]))
        self._forget(t, draft.round, draft.tasks)
        if kept[t] >= draft.target:
            done.add(t)
            self.on_event("type_done", {"type": t, "kept": kept[t], "target": draft.target, "stalled": False})

    def _ahead(self) -> int:
        """How many items a stage may make before the next stage takes them (0: no thread of its own)."""
        return 1 if self.parallel_extras else 0

    def _drafts(self, done: set[str]) -> Iterator[Draft]:
        """The generator's second stage, in its own thread: the instances of each drafted round."""
        with Prefetch(lambda: self._instruction_drafts(done), depth=self._ahead()) as rounds:
            for draft in rounds:
                if not draft.stalled:
                    draft.instances, draft.rejections = self._write_instances(draft.tasks, draft.unsaved)
                yield draft

    def _instruction_drafts(self, done: set[str]) -> Iterator[Draft]:
        """The generator's first stage, in its own thread: each type's rounds of instructions in turn, until
        the type is done or its attempt cap is reached. It writes nothing: its new records travel in the
        draft."""
        pools = {t: InstructionPool(self.cfg.instructions.novelty_threshold) for t in self.cfg.types}
        for t, pool in pools.items():
            for seed in self.seeds[t]:
                pool.add(seed.instruction)
        synthetic: dict[str, list[Task]] = {t: [] for t in self.cfg.types}
        next_round = {t: 0 for t in self.cfg.types}
        stalled: set[str] = set()
        while live := [t for t in self.cfg.types if t not in done and t not in stalled]:
            ready = [t for t in live if not self._progress.enough_in_flight(t, next_round[t])]
            if not ready:
                if not self._progress.wait():
                    return
                continue
            for t in ready:
                target = self.cfg.type_config(t).target
                cap = self.cfg.instructions.max_attempts or 20 * target
                if next_round[t] * self.cfg.instructions.batch_size >= cap:
                    stalled.add(t)
                    yield Draft(t, next_round[t], target, stalled=True)
                    continue
                unsaved: list[tuple[str, dict[str, Any]]] = []
                record, tasks = self._draft_round(t, next_round[t], pools[t], synthetic[t], unsaved)
                synthetic[t].extend(tasks)
                yield Draft(t, next_round[t], target, record, tasks, unsaved=unsaved)
                next_round[t] += 1

    def _publish(self, draft: Draft, with_instances: bool = True) -> None:
        """A drafted round is used: its new stage records are stored, its drops go into the log and its
        counts to the progress view."""
        for stage, record in draft.unsaved:
            self.store.append(stage, record)
        for r in (*draft.record["rejections"], *draft.rejections):
            self.store.add_rejection(r)
        self.on_event("instructions", {"type": draft.type, "candidates": draft.record["candidates"],
                                       "accepted": len(draft.tasks)})
        if with_instances:
            self.on_event("instances", {"done": len(draft.tasks), "valid": len(draft.instances)})

    def _instruction_round(self, t: str, round_no: int, pool: InstructionPool, synthetic: list[Task]) -> list[Task]:
        """One round of instructions, drafted and published at once (for recipes without a producer)."""
        unsaved: list[tuple[str, dict[str, Any]]] = []
        record, tasks = self._draft_round(t, round_no, pool, synthetic, unsaved)
        self._publish(Draft(t, round_no, 0, record, tasks, unsaved=unsaved), with_instances=False)
        return tasks

    def _draft_round(self, t: str, round_no: int, pool: InstructionPool, synthetic: list[Task],
                     unsaved: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[Task]]:
        """A round's record and accepted tasks, replayed from disk or made now (then added to unsaved)."""
        stored = self._rounds.get((t, round_no))
        if stored is None:
            result = self._new_round(t, round_no, pool, synthetic, self.writer_for_round(round_no))
            if failed := next((r for r in result.rejections if r.reason == "backend_error"), None):
                raise MemberDown(result.writer, failed.detail.get("error"))  # the round is not saved
            stored = {**asdict(result), "stage": "instructions"}
            unsaved.append(("instructions", stored))
            tasks = result.tasks
        else:  # replay: the accepted instructions join the pool in their original order
            tasks = [task_from_json(x) for x in stored["tasks"]]
            for task in tasks:
                pool.add(task.instruction)
        self._tasks.update((task.id, task) for task in tasks)
        return stored, tasks

    def _new_round(self, t: str, round_no: int, pool: InstructionPool, synthetic: list[Task], writer: str) -> Round:
        return generate_round(t, round_no, self.seeds[t], synthetic, pool, self.backends[writer], self.cfg)

    def _forget(self, t: str, round_no: int, tasks: list[Task]) -> None:
        """Drop a decided round's records from memory; they are on disk."""
        self._rounds.pop((t, round_no), None)
        for task in tasks:
            self._tasks.pop(task.id, None)
            record = self._instances.pop(task.id, {})
            for inst in record.get("instances", [record["instance"]] if "instance" in record else []):
                for member in self.members:
                    self._outputs.pop((inst["id"], member), None)

    def _decide_all(self, instances: list[Instance], room: int) -> int:
        """Extra outputs and consensus for a round's instances; returns how many were kept."""
        candidates = self._extra_outputs(instances)
        kept = 0
        for inst in instances:
            if kept >= room:
                break
            kept += self._decide(inst, candidates.get(inst.id, []))
        return kept

    def _write_instances(self, tasks: list[Task], unsaved: list[tuple[str, dict[str, Any]]]
                         ) -> tuple[list[Instance], list[dict[str, Any]]]:
        """Stage 2 for a round's tasks: the valid instances, and the rejections of the others."""
        for writer, group in unfinished_groups(tasks, self.instance_writer, self._instances).items():
            for task, result, done in generate_instances(group, self.backends[writer], self.demos, self.cfg):
                if task.id in self._instances:
                    continue
                if not done.ok:
                    raise MemberDown(writer, done.error)  # no record: a resume asks again
                record = {"task_id": task.id, "member": writer, "usage": usage_of([done])}
                record["instance" if isinstance(result, Instance) else "rejection"] = to_json(result)
                unsaved.append(("instances", record))
                self._instances[task.id] = record
        records = [self._instances[task.id] for task in tasks]
        return ([Instance(**r["instance"]) for r in records if "instance" in r],
                [r["rejection"] for r in records if "rejection" in r])

    def _extra_outputs(self, instances: list[Instance]) -> dict[str, list[Candidate]]:
        """Every extra member answers its share at the same time as the others (one thread each)."""
        if not self.cfg.ensemble:
            return {}
        jobs: dict[str, list[Instance]] = {}
        for inst in instances:
            for member in self.extras_for(inst.model):
                jobs.setdefault(member, []).append(inst)
        # a member with nothing left to answer sits out; one with anything left answers its whole share
        # again, as its batch decides its answers (see unfinished_groups)
        jobs = {m: group for m, group in jobs.items() if any((i.id, m) not in self._outputs for i in group)}
        if jobs:
            stop = threading.Event()
            with ThreadPoolExecutor(max_workers=len(jobs) if self.parallel_extras else 1) as pool:
                try:
                    futures = {m: pool.submit(self._answer, m, group, stop) for m, group in jobs.items()}
                    failures = {m: error for m, f in futures.items() if (error := f.result()) is not None}
                except BaseException:
                    stop.set()  # Ctrl-C: cut the answers in flight short instead of waiting for them all
                    raise
            for member, error in failures.items():
                self._member_failed(member, error)
        out: dict[str, list[Candidate]] = {}
        for inst in instances:
            answered = [m for m in self.extras_for(inst.model) if (inst.id, m) in self._outputs]
            out[inst.id] = [Candidate(**{**self._outputs[(inst.id, m)]["candidate"], "index": k})
                            for k, m in enumerate(answered, start=1)]
        self.on_event("outputs", {"done": sum(len(g) for g in jobs.values())})
        return out

    def _answer(self, member: str, group: list[Instance], stop: threading.Event) -> str | None:
        """Store the member's answers; returns the error if it failed (its failed answers are not stored).
        Once stop is set, the answer in flight ends as a "cancelled" error and the rest are not asked for."""
        cancel_event.set(stop)
        for inst, (cand, done) in zip(group, generate_outputs(group, self.backends[member], self.demos, self.cfg)):
            if not done.ok:
                return done.error
            if (inst.id, member) in self._outputs:
                continue
            record = {"instance_id": inst.id, "member": member, "candidate": to_json(cand), "usage": usage_of([done])}
            self.store.append("outputs", record)  # appends are serialized by the GIL, one whole line each
            self._outputs[(inst.id, member)] = record
        return None

    def _member_failed(self, member: str, error: str | None) -> None:
        """Stop, or go on without the member while another extra member is left to agree with."""
        self.down.add(member)
        generators = [m.name for m in self.cfg.members_with("instances")]
        if self.cfg.on_member_failure == "stop" or not all(self.extras_for(g) for g in generators):
            raise MemberDown(member, error)
        left = sorted({m for g in generators for m in self.extras_for(g)})
        self.store.add_rejection(to_json(Rejection("backend", member, "member_down", "", model=member,
                                                   detail={"error": error, "continuing_with": left})))
        self.on_event("member_down", {"member": member, "error": error})

    def _decide(self, inst: Instance, extras: list[Candidate]) -> int:
        """Stage 4: keep the consensus answer, or log why the models disagreed."""
        first = Candidate(0, inst.model, "generator", "few_shot", inst.output)
        cands = [first, *extras]
        if not self.cfg.ensemble:
            return self._keep(inst, self._example(inst, cands, Decision(True, "single", 0, [], {})))
        c = self.cfg.consensus
        decision = decide(cands, inst.instruction, inst.input if inst.type == "A" else "", c.threshold, c.rule,
                          c.hygiene, self.cfg.drop_input_copies, c.prefer)
        if decision.kept:
            return self._keep(inst, self._example(inst, cands, decision))
        self.store.add_rejection(to_json(Rejection(
            "ensemble", inst.id, decision.reason, inst.type, inst.output, inst.model, decision.min_score,
            {"instruction": inst.instruction, "input": inst.input, "candidates": _candidates(cands, decision),
             "pairwise_rougeL": decision.pairwise, "min_pair": decision.min_pair})))
        self.on_event("decided", {"type": inst.type, "kept": False})
        return 0

    def _keep(self, inst: Instance, example: dict[str, Any]) -> int:
        """Store a kept example and announce the decision (the progress bars count these)."""
        self.store.add_kept(example)
        self.on_event("decided", {"type": inst.type, "kept": True})
        return 1

    def _example(self, inst: Instance, cands: list[Candidate], decision: Decision) -> dict[str, Any]:
        task = self._tasks[inst.task_id]
        chosen = cands[decision.chosen]
        authors = {task.model, inst.model, chosen.model}
        return {
            "id": inst.id, "type": inst.type, "instruction": inst.instruction, "input": inst.input,
            "output": chosen.text,
            "provenance": {
                "instruction": {"model": task.model, "demo_ids": task.demo_ids, "novelty_max": task.novelty_max,
                                "nearest": task.nearest, "top_similar": task.top_similar},
                "instance": {"model": inst.model, "raw_completion": inst.raw_completion},
                "candidates": _candidates(cands, decision),
                "pairwise_rougeL": decision.pairwise,
                "selection": {"method": decision.reason, "chosen_index": chosen.index, "chosen_model": chosen.model},
                "restricted_terms": sorted(authors & self.restricted),
                "run": {"method": self.cfg.method, "config_hash": self.cfg.content_hash(), "seed": self.cfg.seed,
                        "version": __version__},
            },
        }


def _candidates(cands: list[Candidate], decision: Decision) -> list[dict[str, Any]]:
    """The candidates as stored: each with the reason it did not vote (None when it did)."""
    return [{**to_json(c), "dropped": decision.dropped.get(c.index)} for c in cands]


def unfinished_groups(tasks: Sequence[Task], writer_of: Callable[[Task], str],
                      finished: dict[str, Any]) -> dict[str, list[Task]]:
    """Tasks grouped by the member that writes them, for the groups with a task not yet finished. Such a
    group is asked for whole, even when part of it is on disk: a backend may decode a call's prompts as
    one batch, whose outputs depend on every prompt in it, so a resumed run must ask for the same calls
    as an uninterrupted one (and it keeps what was stored before)."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(writer_of(task), []).append(task)
    return {writer: group for writer, group in groups.items() if any(t.id not in finished for t in group)}

