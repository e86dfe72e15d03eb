"""Stage 2: the generator model writes one instance (input and output) for each accepted instruction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .backends import Backend, Completion
from .config import RunConfig
from .ensemble import normalize
from .prompts import END, ParsedInstance, build_instance_prompt, parse_instance
from .records import Demo, Instance, Rejection, Task, derive_seed

STOPS = ("\n\n", END)  # a demo block ends at a blank line and the end marker


def generate_instances(
    tasks: Sequence[Task], backend: Backend, demos: dict[str, list[Demo]], cfg: RunConfig
) -> Iterator[tuple[Task, Instance | Rejection, Completion]]:
    """One instance per task, with the completion that made it (for usage figures)."""
    prompts = [
        build_instance_prompt(t.type, demos[t.type][: cfg.type_config(t.type).instance_demos], t.instruction)
        for t in tasks
    ]
    params = [
        cfg.instances.sampling.params(stop=STOPS).with_seed(derive_seed(cfg.seed, "instance", t.id)) for t in tasks
    ]
    for task, done in zip(tasks, backend.generate(prompts, params)):
        yield task, judge_instance(task, done.text, done.finish_reason, done.error, backend.name, cfg), done


def judge_instance(
    task: Task, text: str, finish_reason: str, error: str | None, model: str, cfg: RunConfig
) -> Instance | Rejection:
    def reject(reason: str, **detail: object) -> Rejection:
        return Rejection("instance_parse", task.id, reason, type=task.type, text=text, model=model, detail=dict(detail))

    if error:
        return reject("backend_error", error=error)
    if finish_reason == "length":
        return reject("truncated")
    parsed = parse_instance(text, task.type)
    if not isinstance(parsed, ParsedInstance):
        return reject(parsed)
    if cfg.drop_input_copies and task.type == "A" and normalize(parsed.output) == normalize(parsed.input):
        return reject("output_copies_input")  # small models often echo the input; it teaches nothing
    limit = cfg.instances.max_output_chars
    if limit and len(parsed.output) > limit:
        return reject("too_long", chars=len(parsed.output))
    return Instance.new(task, parsed.input, parsed.output, model, text)
