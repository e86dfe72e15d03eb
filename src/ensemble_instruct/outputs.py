"""Stage 3: the other members answer each instance; instruction-tuned ones zero-shot, base ones few-shot."""

from __future__ import annotations

from collections.abc import Sequence

from .backends import Backend, Completion, GenParams
from .config import RunConfig
from .prompts import END, build_base_output_prompt, build_zero_shot, parse_output
from .records import Candidate, Demo, Instance, derive_seed


def output_params(cfg: RunConfig, instruction_tuned: bool) -> GenParams:
    stop = (END,) if instruction_tuned and cfg.outputs.stop == "end_of_turn" else ("\n\n", END)
    return cfg.outputs.sampling.params(stop=stop)


def prompt_mode(backend: Backend) -> str:
    return "zero_shot" if backend.instruction_tuned else "few_shot"


def generate_outputs(
    instances: Sequence[Instance], backend: Backend, demos: dict[str, list[Demo]], cfg: RunConfig
) -> list[tuple[Candidate, Completion]]:
    """One candidate per instance from one extra member; an empty answer stays an empty candidate."""
    mode = prompt_mode(backend)
    if mode == "zero_shot":
        prompts = [build_zero_shot(i.instruction, i.input, chat=True) for i in instances]
    else:
        prompts = [
            build_base_output_prompt(
                i.type, demos[i.type][: cfg.type_config(i.type).instance_demos], i.instruction, i.input
            )
            for i in instances
        ]
    params = [
        output_params(cfg, backend.instruction_tuned).with_seed(derive_seed(cfg.seed, "output", i.id, backend.name))
        for i in instances
    ]
    out = []
    for done in backend.generate(prompts, params):
        text = parse_output(done.text) if done.ok else ""
        # the index is set when the candidates of an instance are put together
        out.append((Candidate(0, backend.name, "extra", mode, text, done.error, done.finish_reason), done))
    return out
