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


def generate_round(
    task_type: str,
    round_no: int,
    seeds: Sequence[SeedTask],
    synthetic: Sequence[Task],
    pool: InstructionPool,
    backend: Backend,
    cfg: RunConfig,
) -> Round:
    """Sample one prompt batch_size times (its demo block is then read once), then judge each piece.
    Accepted instructions join the index at once, so later pieces are compared with them."""
    counts = cfg.type_config(task_type)
    demos = sample_demos(
        seeds,
        synthetic,
        counts.seed_demos,
        counts.synthetic_demos,
        derive_seed(cfg.seed, "instructions", task_type, round_no),
    )
    prompt = build_instruction_prompt([d.instruction for d in demos])
    result = Round(task_type, round_no, backend.name, [d.id for d in demos])
    for item, done in sample_round(result, prompt, cfg.instructions.sampling.params(stop=(END,)), backend, cfg):
        pieces = parse_instructions(done.text, done.finish_reason == "length")
        judge_pieces(result, [(p.text, p.truncated) for p in pieces], pool, demos, cfg, item)
    return result


def sample_round(
    result: Round, prompt: str, params: GenParams, backend: Backend, cfg: RunConfig
) -> Iterator[tuple[str, Completion]]:
    """Sample the round's prompt batch_size times; yields each good completion with its item ID and
    records a failed one as a backend rejection."""
    n = cfg.instructions.batch_size
    seeds = [derive_seed(cfg.seed, "instruction-sample", result.type, result.round, k) for k in range(n)]
    completions = backend.generate([prompt] * n, [params.with_seed(s) for s in seeds])
    result.usage = usage_of(completions)
    for k, done in enumerate(completions):
        item = f"{result.type}-r{result.round}-s{k}"
        if done.ok:
            yield item, done
        else:
            result.rejections.append(
                Rejection(
                    "backend", item, "backend_error", type=result.type, model=backend.name, detail={"error": done.error}
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
