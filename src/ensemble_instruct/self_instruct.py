"""The Self-Instruct baseline (--method self-instruct, METHOD §8), made with the same models and store,
so that its data set can be compared with an Ensemble-Instruct one made the same way."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .backends import Completion, GenParams
from .context import Draft, RunContext, Unsaved
from .ensemble import Decision
from .errors import UserError
from .instructions import InstructionPool, Round, judge_pieces, sample_demos, sample_round
from .records import Candidate, Demo, Instance, Rejection, Task, derive_seed, to_json, usage_of
from .replay import MemberDown, write_instances
from .seeds import load_seeds
from .self_instruct_prompts import (
    CLASSIFY_STOPS,
    INSTANCE_STOPS,
    INSTRUCTION_STOPS,
    Example,
    build_classify_prompt,
    build_input_first_prompt,
    build_instruction_prompt,
    build_output_first_prompt,
    filter_examples,
    parse_classify,
    parse_input_first,
    parse_instructions,
    parse_output_first,
)

ALL = "all"  # the recipe has no task types until an instance shows whether it has an input
# Most tasks are not classification; with as many "No" as "Yes" demos the small default generator
# answered "Yes" to 80 % of non-classification seed tasks; with twice as many "No", to 17 % (and it
# then recognised 2 of 14 classification tasks: the check is weak with a 0.5B model).
CLASSIFY_DEMOS = {True: 6, False: 12}
INPUT_FIRST_DEMOS = {"A": 5, "B": 3}
OUTPUT_FIRST_DEMOS = 6


@dataclass(frozen=True)
class InstanceDemos:
    """The fixed demos of the recipe's three instance-side prompts, from the project's own seeds."""

    classify: list[tuple[str, bool]]
    input_first: list[Demo]
    output_first: list[Demo]

    @classmethod
    def shipped(cls, demos: dict[str, list[Demo]]) -> InstanceDemos:
        seeds = load_seeds("default")
        labels = [s for s in seeds if s.is_classification and s.type == "A" and len(s.instances[0][1].split()) <= 2]
        others = [s for s in seeds if not s.is_classification]
        classify = [(s.instruction, True) for s in labels[: CLASSIFY_DEMOS[True]]]
        classify += [(s.instruction, False) for s in others[: CLASSIFY_DEMOS[False]]]
        random.Random(0).shuffle(classify)  # a fixed order with no pattern a model could continue
        input_first = [d for t, n in INPUT_FIRST_DEMOS.items() for d in demos[t][:n]]
        output_first = [
            Demo("A", s.instruction, s.instances[0][0], s.instances[0][1], s.id) for s in labels[:OUTPUT_FIRST_DEMOS]
        ]
        return cls(classify, input_first, output_first)


@dataclass
class Written:
    """What the generator wrote for one task: the classification verdict and the surviving examples."""

    classification: bool
    instances: list[Instance] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)


class SelfInstruct:
    """One pool of instructions with no type split; up to five instances per instruction, all kept;
    no extra outputs and no ensembling."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx, self.cfg = ctx, ctx.cfg
        self.instance_demos = InstanceDemos.shipped(ctx.demos)
        need = self.cfg.self_instruct.seed_demos + self.cfg.self_instruct.synthetic_demos
        if len(ctx.seeds) < need:
            raise UserError(f"seeds: {len(ctx.seeds)} tasks, the self-instruct prompt needs {need} demos")

    def run(self) -> None:
        pool = InstructionPool(self.cfg.instructions.novelty_threshold)
        for seed in self.ctx.seeds:
            pool.add(seed.instruction)
        synthetic: list[Task] = []
        kept, round_no, target = 0, 0, self.cfg.target()
        cap = self.cfg.instructions.max_attempts or 20 * target
        while kept < target and round_no * self.cfg.instructions.batch_size < cap:
            unsaved: Unsaved = []
            record, tasks = self.ctx.draft_round(ALL, round_no, pool, self._maker(round_no, pool, synthetic), unsaved)
            self.ctx.publish(Draft(ALL, round_no, 0, record, tasks, unsaved=unsaved), with_instances=False)
            synthetic.extend(tasks)
            kept += self._finish_tasks(tasks, target - kept)
            self.ctx.forget(ALL, round_no, tasks)
            round_no += 1
        self.ctx.on_event("type_done", {"type": ALL, "kept": kept, "target": target, "stalled": kept < target})

    def _maker(self, round_no: int, pool: InstructionPool, synthetic: list[Task]):
        return lambda writer: self._new_round(round_no, pool, synthetic, writer)

    def _new_round(self, round_no: int, pool: InstructionPool, synthetic: list[Task], writer: str) -> Round:
        si = self.cfg.self_instruct
        demos = sample_demos(
            self.ctx.seeds,
            synthetic,
            si.seed_demos,
            si.synthetic_demos,
            derive_seed(self.cfg.seed, "instructions", ALL, round_no),
        )
        prompt = build_instruction_prompt([d.instruction for d in demos])
        result = Round(ALL, round_no, writer, [d.id for d in demos])
        params = si.instructions.params(INSTRUCTION_STOPS)
        for item, done in sample_round(result, prompt, params, self.ctx.backends[writer], self.cfg):
            if done.finish_reason == "length":  # the recipe drops a completion cut by the limit
                result.rejections.append(
                    Rejection(
                        "instruction_filter", item, "truncated_completion", type=ALL, text=done.text, model=writer
                    )
                )
                continue
            judge_pieces(result, [(text, False) for text in parse_instructions(done.text)], pool, demos, self.cfg, item)
        return result

    def _finish_tasks(self, tasks: list[Task], room: int) -> int:
        def write_group(group: list[Task], writer: str):
            for task, written in zip(group, self._write(group, writer)):
                yield (
                    task,
                    {
                        "task_id": task.id,
                        "member": writer,
                        "classification": written.classification,
                        "instances": [to_json(i) for i in written.instances],
                        "rejections": [to_json(r) for r in written.rejections],
                        "usage": usage_of(written.completions),
                    },
                )

        records = write_instances(
            tasks,
            self.ctx.instance_writer,
            self.ctx.finished.instances,
            write_group,
            lambda record: self.ctx.store.append("instances", record),
        )
        kept = valid = 0
        for record in records:
            for r in record["rejections"]:
                self.ctx.store.add_rejection(r)
            valid += len(record["instances"])
            for inst in (Instance(**x) for x in record["instances"]):
                if kept < room:
                    kept += self._keep(inst, record["classification"])
        self.ctx.on_event("instances", {"done": len(tasks), "valid": valid})
        return kept

    def _write(self, tasks: list[Task], writer: str) -> list[Written]:
        """The classification check for every task, then each task's instances in the order it asks for."""
        backend, si, demos = self.ctx.backends[writer], self.cfg.self_instruct, self.instance_demos
        checks = backend.generate(
            [build_classify_prompt(demos.classify, t.instruction) for t in tasks],
            GenParams(max_new_tokens=3, stop=CLASSIFY_STOPS),
        )
        if failed := next((c for c in checks if not c.ok), None):
            raise MemberDown(writer, failed.error)
        written = [Written(parse_classify(c.text), completions=[c]) for c in checks]
        prompts = [
            build_output_first_prompt(demos.output_first, t.instruction)
            if w.classification
            else build_input_first_prompt(demos.input_first, t.instruction)
            for t, w in zip(tasks, written)
        ]
        params = [
            si.instances.params(INSTANCE_STOPS, si.classification_max_new_tokens if w.classification else None)
            for w in written
        ]
        for task, w, done in zip(tasks, written, backend.generate(prompts, params)):
            w.completions.append(done)
            self._judge_examples(task, w, done, writer)
        return written

    def _judge_examples(self, task: Task, written: Written, done: Completion, model: str) -> None:
        def reject(reason: str, text: str, **detail: Any) -> None:
            written.rejections.append(
                Rejection("instance_parse", task.id, reason, type=ALL, text=text, model=model, detail=dict(detail))
            )

        if not done.ok:
            raise MemberDown(model, done.error)  # nothing of this round's instances is saved; a resume asks again
        parse = parse_output_first if written.classification else parse_input_first
        examples = parse(done.text)
        if done.finish_reason == "length" and examples:
            reject("truncated", examples.pop().output)  # the last example was cut by the token limit
        limit = self.cfg.self_instruct.max_instances
        examples, extra = examples[:limit], examples[limit:]
        for ex in extra:
            reject("over_max_instances", ex.output, input=ex.input)
        if not examples:
            return reject("parse_error:no_example", done.text)
        kept, dropped = filter_examples(examples)
        for ex, reason in dropped:
            reject(reason, ex.output, input=ex.input)
        written.instances = [_instance(task, ex, model, done.text) for ex in kept]

    def _keep(self, inst: Instance, classification: bool) -> int:
        cands = [Candidate(0, inst.model, "generator", "few_shot", inst.output)]
        facts = {"classification": classification, "order": "output_first" if classification else "input_first"}
        return self.ctx.keep(inst, cands, Decision(True, "single", 0, [], {}), facts)


def _instance(task: Task, ex: Example, model: str, raw: str) -> Instance:
    """An example's type follows from its input, as the main method decides a seed's type."""
    return Instance.new(task, ex.input, ex.output, model, raw, task_type="A" if ex.input else "B")
