"""The Ensemble-Instruct recipe's schedule: rounds of each task type through the four stages, with the stages
overlapping so that every member keeps working."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .backends import cancel_event
from .context import Draft, RunContext, Unsaved, stored_candidates
from .ensemble import Decision, decide
from .errors import UserError
from .instances import generate_instances
from .instructions import InstructionPool, generate_round
from .models import preference
from .outputs import generate_outputs
from .prefetch import Prefetch
from .records import Candidate, Instance, Rejection, Task, to_json, usage_of
from .replay import MemberDown, write_instances


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


class EnsembleInstruct:
    """Rounds of each type until its target is met, in three stages that overlap: the generator writes the
    instructions of one round and the instances of the round before, while the other members answer the round
    before that. A drafted round is written to the run directory only when it is used, so what a run stores,
    keeps and logs does not depend on timing: a round drafted after its type was done leaves no trace. With
    `parallel` off (a baseline to measure against) each stage waits for the one before and the extra members
    answer one after another. Without the vote (cfg.ensemble off) the generator's output is kept: the
    single-output ablation."""

    def __init__(self, ctx: RunContext, parallel: bool = True) -> None:
        self.ctx, self.cfg, self.parallel = ctx, ctx.cfg, parallel
        self.progress = Progress({t: self.cfg.type_config(t).target for t in self.cfg.types})
        self.prefer = self.cfg.consensus.prefer or preference(self.cfg.members)
        self._check_counts()

    def _check_counts(self) -> None:
        for t in self.cfg.types:
            counts = self.cfg.type_config(t)
            if len(self.ctx.seeds_by_type[t]) < counts.seed_demos + counts.synthetic_demos:
                raise UserError(
                    f"seeds: {len(self.ctx.seeds_by_type[t])} tasks of type {t}, the prompt needs "
                    f"{counts.seed_demos + counts.synthetic_demos} demos"
                )
            if len(self.ctx.demos[t]) < counts.instance_demos:
                raise UserError(
                    f"instance demos: {len(self.ctx.demos[t])} of type {t}, "
                    f"instance_demos asks for {counts.instance_demos}"
                )
        if self.cfg.ensemble and not self.ctx.extras_for(self.cfg.members_with("instances")[0].name):
            raise UserError(
                "members: ensembling needs another member with the 'outputs' role (or run with --no-ensemble)"
            )

    def run(self) -> None:
        done: set[str] = set()
        with Prefetch(lambda: self._drafts(done), depth=self._ahead()) as drafts:
            try:
                for draft in drafts:
                    self._use(draft, done)
            finally:
                self.progress.stop()  # a drafting thread waiting for a decision ends before the run does

    def _ahead(self) -> int:
        """How many items a stage may make before the next stage takes them (0: no thread of its own)."""
        return 1 if self.parallel else 0

    def _use(self, draft: Draft, done: set[str]) -> None:
        """Publish and decide a drafted round, unless its type is done already."""
        t, kept = draft.type, self.progress.kept
        if t in done:
            return
        if not draft.stalled:
            self.ctx.publish(draft)
            self.progress.decided(t, self._decide_all(draft.instances, draft.target - kept[t]))
            self.ctx.forget(t, draft.round, draft.tasks)
        if draft.stalled or kept[t] >= draft.target:
            done.add(t)
            self.ctx.on_event(
                "type_done", {"type": t, "kept": kept[t], "target": draft.target, "stalled": draft.stalled}
            )

    # --- stages 1 and 2: the generator, ahead of the vote ---------------------------------------------

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
            for seed in self.ctx.seeds_by_type[t]:
                pool.add(seed.instruction)
        synthetic: dict[str, list[Task]] = {t: [] for t in self.cfg.types}
        next_round = {t: 0 for t in self.cfg.types}
        stalled: set[str] = set()
        while live := [t for t in self.cfg.types if t not in done and t not in stalled]:
            ready = [t for t in live if not self.progress.enough_in_flight(t, next_round[t])]
            if not ready:
                if not self.progress.wait():
                    return
                continue
            for t in ready:
                target = self.cfg.type_config(t).target
                cap = self.cfg.instructions.max_attempts or 20 * target
                if next_round[t] * self.cfg.instructions.batch_size >= cap:
                    stalled.add(t)
                    yield Draft(t, next_round[t], target, stalled=True)
                    continue
                unsaved: Unsaved = []
                record, tasks = self.ctx.draft_round(
                    t, next_round[t], pools[t], self._maker(t, next_round[t], pools[t], synthetic[t]), unsaved
                )
                synthetic[t].extend(tasks)
                yield Draft(t, next_round[t], target, record, tasks, unsaved=unsaved)
                next_round[t] += 1

    def _maker(self, t: str, round_no: int, pool: InstructionPool, synthetic: list[Task]):
        seeds = self.ctx.seeds_by_type[t]
        return lambda writer: generate_round(t, round_no, seeds, synthetic, pool, self.ctx.backends[writer], self.cfg)

    def _write_instances(self, tasks: list[Task], unsaved: Unsaved) -> tuple[list[Instance], list[dict[str, Any]]]:
        """Stage 2 for a round's tasks: the valid instances, and the rejections of the others."""

        def write_group(group: list[Task], writer: str):
            for task, result, done in generate_instances(group, self.ctx.backends[writer], self.ctx.demos, self.cfg):
                if not done.ok:
                    raise MemberDown(writer, done.error)  # no record: a resume asks again
                record = {"task_id": task.id, "member": writer, "usage": usage_of([done])}
                record["instance" if isinstance(result, Instance) else "rejection"] = to_json(result)
                yield task, record

        records = write_instances(
            tasks,
            self.ctx.instance_writer,
            self.ctx.finished.instances,
            write_group,
            lambda record: unsaved.append(("instances", record)),
        )
        return (
            [Instance(**r["instance"]) for r in records if "instance" in r],
            [r["rejection"] for r in records if "rejection" in r],
        )

    # --- stages 3 and 4: extra answers and the vote ---------------------------------------------------

    def _decide_all(self, instances: list[Instance], room: int) -> int:
        """Extra outputs and consensus for a round's instances; returns how many were kept."""
        candidates = self._extra_outputs(instances) if self.cfg.ensemble else {}
        kept = 0
        for inst in instances:
            if kept >= room:
                break
            kept += self._decide(inst, candidates.get(inst.id, []))
        return kept

    def _extra_outputs(self, instances: list[Instance]) -> dict[str, list[Candidate]]:
        """Every extra member answers its share at the same time as the others (one thread each)."""
        outputs = self.ctx.finished.outputs
        jobs: dict[str, list[Instance]] = {}
        for inst in instances:
            for member in self.ctx.extras_for(inst.model):
                jobs.setdefault(member, []).append(inst)
        # a member with nothing left to answer sits out; one with anything left answers its whole share
        # again, as its batch decides its answers (see replay.unfinished_groups)
        jobs = {m: group for m, group in jobs.items() if any((i.id, m) not in outputs for i in group)}
        if jobs:
            stop = threading.Event()
            with ThreadPoolExecutor(max_workers=len(jobs) if self.parallel else 1) as pool:
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
            answered = [m for m in self.ctx.extras_for(inst.model) if (inst.id, m) in outputs]
            out[inst.id] = [
                Candidate(**{**outputs[(inst.id, m)]["candidate"], "index": k}) for k, m in enumerate(answered, start=1)
            ]
        self.ctx.on_event("outputs", {"done": sum(len(g) for g in jobs.values())})
        return out

    def _answer(self, member: str, group: list[Instance], stop: threading.Event) -> str | None:
        """Store the member's answers; returns the error if it failed (its failed answers are not stored).
        Once stop is set, the answer in flight ends as a "cancelled" error and the rest are not asked for."""
        cancel_event.set(stop)
        outputs = self.ctx.finished.outputs
        backend = self.ctx.backends[member]
        for inst, (cand, done) in zip(group, generate_outputs(group, backend, self.ctx.demos, self.cfg)):
            if not done.ok:
                return done.error
            if (inst.id, member) in outputs:
                continue
            record = {"instance_id": inst.id, "member": member, "candidate": to_json(cand), "usage": usage_of([done])}
            self.ctx.store.append("outputs", record)
            outputs[(inst.id, member)] = record
        return None

    def _member_failed(self, member: str, error: str | None) -> None:
        """Stop, or go on without the member while another extra member is left to agree with."""
        self.ctx.down.add(member)
        generators = [m.name for m in self.cfg.members_with("instances")]
        if self.cfg.on_member_failure == "stop" or not all(self.ctx.extras_for(g) for g in generators):
            raise MemberDown(member, error)
        left = sorted({m for g in generators for m in self.ctx.extras_for(g)})
        self.ctx.store.add_rejection(
            to_json(
                Rejection(
                    "backend",
                    member,
                    "member_down",
                    type="",
                    model=member,
                    detail={"error": error, "continuing_with": left},
                )
            )
        )
        self.ctx.on_event("member_down", {"member": member, "error": error})

    def _decide(self, inst: Instance, extras: list[Candidate]) -> int:
        """Stage 4: keep the consensus answer, or log why the models disagreed."""
        cands = [Candidate(0, inst.model, "generator", "few_shot", inst.output), *extras]
        if not self.cfg.ensemble:
            return self.ctx.keep(inst, cands, Decision(True, "single", 0, [], {}))
        c = self.cfg.consensus
        decision = decide(
            cands,
            inst.instruction,
            inst.input if inst.type == "A" else "",
            c.threshold,
            c.rule,
            c.hygiene,
            self.cfg.drop_input_copies,
            self.prefer,
        )
        if decision.kept:
            return self.ctx.keep(inst, cands, decision)
        self.ctx.store.add_rejection(
            to_json(
                Rejection(
                    "ensemble",
                    inst.id,
                    decision.reason,
                    type=inst.type,
                    text=inst.output,
                    model=inst.model,
                    score=decision.min_score,
                    detail={
                        "instruction": inst.instruction,
                        "input": inst.input,
                        "candidates": stored_candidates(cands, decision),
                        "pairwise_rougeL": decision.pairwise,
                        "min_pair": decision.min_pair,
                    },
                )
            )
        )
        self.ctx.on_event("decided", {"type": inst.type, "kept": False})
        return 0
