"""Stage 1: a generator model writes new instructions; filters and the novelty index judge them."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .backends import Backend, Completion, GenParams
from .config import RunConfig
from .filters import check_instruction
from .prompts import END, build_instruction_prompt, parse_instructions
from .records import Rejection, SeedTask, Task, derive_seed, usage_of
from .rouge import NoveltyIndex


@dataclass
class Round:
    """What one round of instruction generation made and dropped."""

    type: str
    round: int
    writer: str
    demo_ids: list[str]
    tasks: list[Task] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    candidates: int = 0
    usage: dict = field(default_factory=dict)


class InstructionPool:
    """Every instruction of one type so far (seeds and accepted): exact texts and the Rouge-L index."""

    def __init__(self, threshold: float) -> None:
        self.index = NoveltyIndex(threshold=threshold, stem=False)
        self.texts: set[str] = set()

    def add(self, text: str) -> None:
        self.texts.add(text)
        self.index.add(text)


def sample_demos(
    seeds: Sequence[SeedTask], synthetic: Sequence[Task], n_seed: int, n_synthetic: int, rng_seed: int
) -> list[SeedTask | Task]:
    """Seed demos plus accepted synthetic ones (seeds fill missing synthetic slots), shuffled, seeded."""
    rng = random.Random(rng_seed)
    took = min(n_synthetic, len(synthetic))
    demos: list[SeedTask | Task] = rng.sample(list(seeds), n_seed + n_synthetic - took)
    demos += rng.sample(list(synthetic), took)
    rng.shuffle(demos)
    return demos


def round_prompt(
    task_type: str, round_no: int, seeds: Sequence[SeedTask], synthetic: Sequence[Task], cfg: RunConfig
) -> tuple[str, list[SeedTask | Task]]:
    """A round's prompt and its demos: the round's own seeded draw of seed and synthetic instructions."""
    counts = cfg.type_config(task_type)
    demos = sample_demos(
        seeds,
        synthetic,
        counts.seed_demos,
        counts.synthetic_demos,
        derive_seed(cfg.seed, "instructions", task_type, round_no),
    )
    return build_instruction_prompt([d.instruction for d in demos]), demos


def generate_round(
    task_type: str,
    round_no: int,
    seeds: Sequence[SeedTask],
    synthetic: Sequence[Task],
    pool: InstructionPool,
    backend: Backend,
    cfg: RunConfig,
) -> Round:
    """Sample one prompt batch_size times (its demo block is then read once), then judge each piece."""
    prompt, demos = round_prompt(task_type, round_no, seeds, synthetic, cfg)
    result = Round(task_type, round_no, backend.name, [d.id for d in demos])
    judge_round(result, ask_round(result, prompt, instruction_params(cfg), backend, cfg), pool, demos, cfg)
    return result


def instruction_params(cfg: RunConfig) -> GenParams:
    return cfg.instructions.sampling.params(stop=(END,))


def ask_round(result: Round, prompt: str, params: GenParams, backend: Backend, cfg: RunConfig) -> list[Completion]:
    """The model call of a round: its prompt sampled batch_size times, each sample with its own seed."""
    n = cfg.instructions.batch_size
    seeds = [derive_seed(cfg.seed, "instruction-sample", result.type, result.round, k) for k in range(n)]
    return backend.generate([prompt] * n, [params.with_seed(s) for s in seeds])


def judge_round(
    result: Round, completions: Sequence[Completion], pool: InstructionPool, demos: Sequence, cfg: RunConfig
) -> None:
    """Judge every piece of a round's completions, in order. Accepted instructions join the pool at once, so
    later pieces are compared with them."""
    for item, done in sampled(result, completions):
        pieces = parse_instructions(done.text, done.finish_reason == "length")
        judge_pieces(result, [(p.text, p.truncated) for p in pieces], pool, demos, cfg, item)


def sample_round(
    result: Round, prompt: str, params: GenParams, backend: Backend, cfg: RunConfig
) -> Iterator[tuple[str, Completion]]:
    """Sample the round's prompt batch_size times; yields each good completion with its item ID."""
    yield from sampled(result, ask_round(result, prompt, params, backend, cfg))


def sampled(result: Round, completions: Sequence[Completion]) -> Iterator[tuple[str, Completion]]:
    """Each good completion of a round with its item ID; a failed one is recorded as a backend rejection."""
    result.usage = usage_of(list(completions))
    for k, done in enumerate(completions):
        item = f"{result.type}-r{result.round}-s{k}"
        if done.ok:
            yield item, done
        else:
            result.rejections.append(
                Rejection(
                    "backend",
                    item,
                    "backend_error",
                    type=result.type,
                    model=result.writer,
                    detail={"error": done.error},
                )
            )


def judge_pieces(
    result: Round, pieces: Sequence[tuple[str, bool]], pool: InstructionPool, demos: Sequence, cfg: RunConfig, item: str
) -> None:
    """Judge a completion's pieces (text, truncated) in order, into the round's tasks and rejections."""
    for p, (text, truncated) in enumerate(pieces):
        result.candidates += 1
        judged = _judge(text, truncated, pool, result.writer, demos, cfg, result.type, f"{item}-p{p}")
        if isinstance(judged, Task):
            result.tasks.append(judged)
        else:
            result.rejections.append(judged)


def _judge(
    text: str,
    truncated: bool,
    pool: InstructionPool,
    model: str,
    demos: Sequence,
    cfg: RunConfig,
    task_type: str,
    item: str,
) -> Task | Rejection:
    if truncated:
        return Rejection("instruction_filter", item, "truncated", type=task_type, text=text, model=model)
    icfg = cfg.instructions
    if reason := check_instruction(text, icfg.min_words, icfg.max_words):
        return Rejection("instruction_filter", item, reason, type=task_type, text=text, model=model)
    if text in pool.texts:
        return Rejection(
            "instruction_filter",
            item,
            "duplicate",
            type=task_type,
            text=text,
            model=model,
            score=1.0,
            detail={"nearest": text},
        )
    found = pool.index.query(text, top_k=10, with_mean=True)
    if not found.is_novel:
        return Rejection(
            "novelty",
            item,
            "rouge_l_above_threshold",
            type=task_type,
            text=text,
            model=model,
            score=found.max_score,
            detail={"nearest": found.nearest, "top_similar": found.top},
        )
    pool.add(text)
    return Task.new(
        task_type,
        text,
        model=model,
        demo_ids=[d.id for d in demos],
        novelty_max=found.max_score,
        nearest=found.nearest,
        top_similar=found.top,
        novelty_mean=found.mean,
    )
