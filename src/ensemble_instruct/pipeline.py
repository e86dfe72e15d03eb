"""The Ensemble-Instruct recipe's schedule. Work flows round by round through the four stages with many rounds in
flight at once: a round's instances are asked for as soon as its instructions are judged, its extra answers as soon
as its instances are written. Whatever finishes first, rounds are judged and decided in a fixed order, so the data
does not depend on timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from .backends import Completion
from .calls import Calls
from .context import Draft, RunContext, stored_candidates
from .ensemble import Decision, decide
from .errors import UserError
from .instances import generate_instances
from .instructions import InstructionPool, Round, ask_round, instruction_params, judge_round, round_prompt
from .models import preference
from .outputs import generate_outputs
from .records import Candidate, Instance, Rejection, Task, task_from_json, to_json, usage_of
from .replay import MemberDown, unfinished_groups

Record = dict[str, Any]


class Progress:
    """Kept examples and decided rounds per type, to judge how many rounds are worth having in flight.

    Drafting stops running ahead on a type once the rounds in flight are expected to meet its target (at the
    keep rate of its decided rounds): a round drafted after its type is done is thrown away. Which rounds are
    drafted when changes no record, only how much work is wasted."""

    def __init__(self, targets: dict[str, int], batch_size: int = 1) -> None:
        self.targets = targets
        self.batch_size = batch_size  # before any round is judged: as if every sample became an instruction
        self.kept = {t: 0 for t in targets}
        self.rounds = {t: 0 for t in targets}  # rounds decided so far
        self.accepted = {t: 0 for t in targets}  # instructions accepted in the rounds judged so far
        self.judged = {t: 0 for t in targets}  # rounds judged so far

    def decided(self, t: str, kept: int) -> None:
        self.kept[t] += kept
        self.rounds[t] += 1

    def judged_round(self, t: str, accepted: int) -> None:
        self.accepted[t] += accepted
        self.judged[t] += 1

    def enough_in_flight(self, t: str, drafted: int) -> bool:
        """Whether the rounds drafted and not decided should meet the target: at the keep rate of the decided
        rounds; before any is decided, at the rate of accepted instructions (no round keeps more); before any
        is judged, at one instruction per sample."""
        if self.rounds[t]:
            rate = self.kept[t] / self.rounds[t]
        elif self.judged[t]:
            rate = self.accepted[t] / self.judged[t]
        else:
            rate = self.batch_size
        return (drafted - self.rounds[t]) * rate >= self.targets[t] - self.kept[t]


@dataclass
class RoundWork(Draft):
    """A round on its way through the stages: what came back so far, and what it still waits for."""

    demos: list = field(default_factory=list)
    sampling: Round | None = None  # a round being sampled now, until it is judged
    samples: list[Completion] | None = None  # its sampled completions, once back
    new: dict[str, Record] = field(default_factory=dict)  # instance records made now, by task
    answers: dict[tuple[str, str], Record] = field(default_factory=dict)  # extra answers made now
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)  # extra candidates, by instance
    waiting: int = 0  # calls of the current stage not back yet
    parked: Callable[[RoundWork], None] | None = None  # its next stage, held while the rounds before it may suffice
    complete: bool = False
    tokens: int = 0  # generated for this round by this run


class EnsembleInstruct:
    """Rounds of each type until its target is met. Round k of a type is sampled once round k - lag is judged
    (its synthetic demos come from the rounds up to k - lag), so `instructions.lag` rounds of instructions are
    sampled together; rounds are judged (the novelty filter) strictly in order, and decided in the order
    round 0 of A, round 0 of B, round 1 of A, and so on. A round's records are written to the run directory
    only when it is decided, so what a run stores, keeps and logs does not depend on timing: a round drafted
    after its type was done leaves no trace (its tokens are counted as unused). With `parallel` off (a baseline
    to measure against) every call waits for the one before. Without the vote (cfg.ensemble off) the
    generator's output is kept: the single-output ablation."""

    def __init__(self, ctx: RunContext, parallel: bool = True) -> None:
        self.ctx, self.cfg, self.parallel = ctx, ctx.cfg, parallel
        self.types: list[str] = list(self.cfg.types)
        self.progress = Progress(
            {t: self.cfg.type_config(t).target for t in self.types}, self.cfg.instructions.batch_size
        )
        self.prefer = self.cfg.consensus.prefer or preference(self.cfg.members)
        self.lag = int(self.cfg.instructions.lag)  # resolved from "auto" when the configuration was read
        self._check_counts()
        self.pools = {t: InstructionPool(self.cfg.instructions.novelty_threshold) for t in self.types}
        for t, pool in self.pools.items():
            for seed in self.ctx.seeds_by_type[t]:
                pool.add(seed.instruction)
        self.synthetic: dict[str, list[Task]] = {t: [] for t in self.types}
        self.synthetic_after: dict[str, list[int]] = {t: [] for t in self.types}  # len(synthetic) per judged round
        self.rounds: dict[tuple[str, int], RoundWork] = {}  # drafted and not decided
        self.next_round = {t: 0 for t in self.types}  # the next round to draft
        self.done: set[str] = set()
        self.capped: set[str] = set()  # types that drafted up to their attempt cap
        self.this_run = {"used": 0, "unused": 0, "unused_rounds": 0}

    def _check_counts(self) -> None:
        for t in self.types:
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

    # --- the loop -------------------------------------------------------------------------------------

    def run(self) -> dict[str, int]:
        """Make the data; returns what this run generated: tokens used, and left unused in rounds not needed."""
        with Calls(self.ctx.backends, self.parallel) as self.calls:
            try:
                shown = 0.0
                while len(self.done) < len(self.types):
                    self._draft()
                    self._decide_ready()
                    if len(self.done) == len(self.types):
                        break
                    if not self.calls.busy and not any(map(self._can_draft, self.types)):
                        raise AssertionError("no call in flight and nothing left to draft")  # a bug, not a user error
                    self.calls.finish()
                    if time.monotonic() - shown > 0.5:
                        shown = time.monotonic()
                        self.ctx.on_event("in_flight", dict(self.calls.prompts_in_flight))
            finally:
                self._count_unused()
        self.this_run["peak_in_flight"] = self.calls.peak_prompts_in_flight
        return self.this_run

    def _count_unused(self) -> None:
        for work in self.rounds.values():
            self.this_run["unused"] += work.tokens
            self.this_run["unused_rounds"] += 1

    def _window(self) -> int:
        """How many rounds of a type may be drafted and not decided: enough for lag rounds in each stage."""
        return 3 * self.lag + 1

    def _can_draft(self, t: str) -> bool:
        k = self.next_round[t]
        return (
            t not in self.done
            and t not in self.capped
            and k < self.progress.judged[t] + self.lag
            and k < self.progress.rounds[t] + self._window()
            and not self.progress.enough_in_flight(t, k)
        )

    # --- stage 1: instructions --------------------------------------------------------------------------

    def _draft(self) -> None:
        """Start every round that may start now; a round stored by an earlier run is replayed at once."""
        for t in self.types:
            while self._can_draft(t):
                k = self.next_round[t]
                self.next_round[t] += 1
                work = RoundWork(t, k, self.cfg.type_config(t).target)
                self.rounds[(t, k)] = work
                cap = self.cfg.instructions.max_attempts or 20 * work.target
                if k * self.cfg.instructions.batch_size >= cap:
                    work.stalled = work.complete = True
                    self.capped.add(t)
                    continue
                if (stored := self.ctx.finished.rounds.get((t, k))) is not None:
                    work.record = stored
                    self._judge_ready(t)
                    self._decide_ready()  # a replayed round may meet the target: then nothing more is asked for
                else:
                    self._sample(work)

    def _sample(self, work: RoundWork) -> None:
        t, k = work.type, work.round
        synthetic = self.synthetic[t][: self.synthetic_after[t][k - self.lag] if k >= self.lag else 0]
        prompt, work.demos = round_prompt(t, k, self.ctx.seeds_by_type[t], synthetic, self.cfg)
        writer = self.ctx.writer_for_round(k)
        result = Round(t, k, writer, [d.id for d in work.demos])
        work.sampling = result  # judged later, in order
        ask = partial(ask_round, result, prompt, instruction_params(self.cfg), self.ctx.backends[writer], self.cfg)
        self.calls.submit(writer, self.cfg.instructions.batch_size, ask, partial(self._sampled, work), owner=work)

    def _sampled(self, work: RoundWork, completions: list[Completion]) -> None:
        work.samples = completions
        work.tokens += sum(c.completion_tokens for c in completions)
        self._judge_ready(work.type)

    def _judge_ready(self, t: str) -> None:
        """Judge the rounds of type t that came back, in round order, and start their instances."""
        while t not in self.done and (work := self.rounds.get((t, self.progress.judged[t]))) and not work.complete:
            if (result := work.sampling) is not None:
                if work.samples is None:
                    return
                judge_round(result, work.samples, self.pools[t], work.demos, self.cfg)
                if failed := next((r for r in result.rejections if r.reason == "backend_error"), None):
                    raise MemberDown(result.writer, failed.detail.get("error"))
                work.record = {**asdict(result), "stage": "instructions"}
                work.unsaved.append(("instructions", work.record))
                work.tasks, work.sampling, work.samples = result.tasks, None, None
            else:  # replay: the accepted instructions join the pool in their original order
                work.tasks = [task_from_json(x) for x in work.record["tasks"]]
                for task in work.tasks:
                    self.pools[t].add(task.instruction)
            self.progress.judged_round(t, len(work.tasks))
            self.synthetic[t].extend(work.tasks)
            self.synthetic_after[t].append(len(self.synthetic[t]))
            self.ctx.tasks.update((task.id, task) for task in work.tasks)
            self._next_stage(work, self._write_instances)

    def _next_stage(self, work: RoundWork, stage: Callable[[RoundWork], None]) -> None:
        """Start a round's next stage, unless the rounds before it, still undecided, are expected to meet the
        target: then it waits for their decisions (and is not needed if they do meet it). Which calls are made
        then changes no answer, only how much work goes unused."""
        if self.progress.enough_in_flight(work.type, work.round):
            work.parked = stage
        else:
            stage(work)

    def _unpark(self, t: str) -> None:
        """After a decision of type t: start the held stages that the rounds before them may no longer cover."""
        for (other, _), work in sorted(self.rounds.items()):
            if other == t and (stage := work.parked) is not None:
                work.parked = None
                self._next_stage(work, stage)

    # --- stage 2: instances -------------------------------------------------------------------------------

    def _write_instances(self, work: RoundWork) -> None:
        """Each writer's group with a task not finished is asked for whole (see replay.unfinished_groups)."""
        groups = unfinished_groups(work.tasks, self.ctx.instance_writer, self.ctx.finished.instances)
        work.waiting = len(groups)
        for writer, group in groups.items():
            ask = partial(self._instances_of, group, writer)
            self.calls.submit(writer, len(group), ask, partial(self._instances_written, work, writer), owner=work)
        if not groups:
            self._instances_done(work)

    def _instances_of(self, group: list[Task], writer: str) -> list:
        return list(generate_instances(group, self.ctx.backends[writer], self.ctx.demos, self.cfg))

    def _instances_written(self, work: RoundWork, writer: str, results: list) -> None:
        work.tokens += sum(done.completion_tokens for _, _, done in results)
        if work.type in self.done:
            return
        for task, result, done in results:
            if not done.ok:
                raise MemberDown(writer, done.error)  # no record: a resume asks again
            if task.id not in self.ctx.finished.instances:
                record = {"task_id": task.id, "member": writer, "usage": usage_of([done])}
                record["instance" if isinstance(result, Instance) else "rejection"] = to_json(result)
                work.new[task.id] = record
        work.waiting -= 1
        if not work.waiting:
            self._instances_done(work)

    def _instances_done(self, work: RoundWork) -> None:
        records = [self.ctx.finished.instances.get(t.id) or work.new[t.id] for t in work.tasks]
        work.unsaved.extend(("instances", work.new[t.id]) for t in work.tasks if t.id in work.new)
        work.instances = [Instance(**r["instance"]) for r in records if "instance" in r]
        work.rejections = [r["rejection"] for r in records if "rejection" in r]
        if self.cfg.ensemble:
            self._next_stage(work, self._extra_outputs)
        else:
            work.complete = True

    # --- stage 3: extra answers -----------------------------------------------------------------------

    def _extra_outputs(self, work: RoundWork) -> None:
        """Every extra member answers its share of the round, at the same time as the others."""
        outputs = self.ctx.finished.outputs
        jobs: dict[str, list[Instance]] = {}
        for inst in work.instances:
            for member in self.ctx.extras_for(inst.model):
                jobs.setdefault(member, []).append(inst)
        # a member with nothing left to answer sits out; one with anything left answers its whole share
        # again, as its batch decides its answers (see replay.unfinished_groups)
        jobs = {m: group for m, group in jobs.items() if any((i.id, m) not in outputs for i in group)}
        work.waiting = len(jobs)
        for member, group in jobs.items():
            ask = partial(generate_outputs, group, self.ctx.backends[member], self.ctx.demos, self.cfg)
            self.calls.submit(member, len(group), ask, partial(self._answered, work, member, group), owner=work)
        if not jobs:
            self._outputs_done(work)

    def _answered(self, work: RoundWork, member: str, group: list[Instance], answers: list) -> None:
        """Keep the member's answers up to its first failure, then go on without it (or stop)."""
        work.tokens += sum(done.completion_tokens for _, done in answers)
        if work.type in self.done:
            return
        error = None
        for inst, (cand, done) in zip(group, answers):
            if not done.ok:
                error = done.error
                break
            if (inst.id, member) not in self.ctx.finished.outputs:
                work.answers[(inst.id, member)] = {
                    "instance_id": inst.id, "member": member, "candidate": to_json(cand), "usage": usage_of([done])
                }  # fmt: skip
        if error is not None:
            self._member_failed(member, error)
        work.waiting -= 1
        if not work.waiting:
            self._outputs_done(work)

    def _outputs_done(self, work: RoundWork) -> None:
        stored = self.ctx.finished.outputs
        for inst in work.instances:
            found = (
                (m, work.answers.get((inst.id, m)) or stored.get((inst.id, m))) for m in self.ctx.extras_for(inst.model)
            )
            answered = [(m, record) for m, record in found if record]
            work.candidates[inst.id] = [
                Candidate(**{**record["candidate"], "index": k}) for k, (_, record) in enumerate(answered, start=1)
            ]
            made = [work.answers[(inst.id, m)] for m, _ in answered if (inst.id, m) in work.answers]
            work.unsaved.extend(("outputs", record) for record in made)
        self.ctx.on_event("outputs", {"done": len(work.answers)})
        work.complete = True

    # --- stage 4: the vote, in order ----------------------------------------------------------------------

    def _decide_ready(self) -> None:
        """Decide the complete rounds that come next in the fixed order (round by round, types in turn)."""
        while live := [t for t in self.types if t not in self.done]:
            t = min(live, key=lambda t: (self.progress.rounds[t], self.types.index(t)))
            work = self.rounds.get((t, self.progress.rounds[t]))
            if work is None or not work.complete:
                return
            del self.rounds[(t, work.round)]
            self._use(work)

    def _use(self, work: RoundWork) -> None:
        """Publish and decide a complete round; its type is done once its target is met."""
        t, kept = work.type, self.progress.kept
        self.this_run["used"] += work.tokens
        if not work.stalled:
            self.ctx.publish(work)
            self.progress.decided(t, self._decide_all(work.instances, work.candidates, work.target - kept[t]))
            self.ctx.forget(t, work.round, work.tasks)
        if work.stalled or kept[t] >= work.target:
            self.done.add(t)
            for (other_type, _), left in list(self.rounds.items()):
                if other_type == t:  # drafted ahead and not needed: not started, not asked for
                    self.calls.cancel(left)
            self.ctx.on_event("type_done", {"type": t, "kept": kept[t], "target": work.target, "stalled": work.stalled})
        else:
            self._unpark(t)

    def _decide_all(self, instances: list[Instance], candidates: dict[str, list[Candidate]], room: int) -> int:
        """Consensus for a round's instances, until the type's target is met; returns how many were kept."""
        kept = 0
        for inst in instances:
            if kept >= room:
                break
            kept += self._decide(inst, candidates.get(inst.id, []))
        return kept

    def _member_failed(self, member: str, error: str | None) -> None:
        """Stop, or go on without the member while another extra member is left to agree with."""
        if member in self.ctx.down:
            return  # another round's call to it failed first; its answers still in flight fail the same way
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
