"""Stage 1: a generator model writes new instructions; filters and the novelty index judge them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .backends import Backend, GenParams
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


def sample_demos(task_type: str, round_no: int, seeds: Sequence[SeedTask], synthetic: Sequence[Task],
                 cfg: RunConfig) -> list[SeedTask | Task]:
    """Seed demos plus accepted synthetic ones (seeds fill missing synthetic slots), shuffled, seeded."""
    counts = cfg.type_config(task_type)
    rng = random.Random(derive_seed(cfg.seed, "instructions", task_type, round_no))
    n_synthetic = min(counts.synthetic_demos, len(synthetic))
    demos: list[SeedTask | Task] = rng.sample(list(seeds), counts.seed_demos + counts.synthetic_demos - n_synthetic)
    demos += rng.sample(list(synthetic), n_synthetic)
    rng.shuffle(demos)
    return demos


def instruction_params(cfg: RunConfig) -> GenParams:
    s = cfg.instructions.sampling
    return GenParams(s.temperature, s.top_k, s.top_p, s.max_new_tokens, s.min_new_tokens, stop=(END,))


def generate_round(task_type: str, round_no: int, seeds: Sequence[SeedTask], synthetic: Sequence[Task],
                   pool: InstructionPool, backend: Backend, cfg: RunConfig) -> Round:
    """Sample one prompt batch_size times (its demo block is then read once), then judge each piece.
    Accepted instructions join the index at once, so later pieces are compared with them."""
    demos = sample_demos(task_type, round_no, seeds, synthetic, cfg)
    prompt = build_instruction_prompt([d.instruction for d in demos])
    base = instruction_params(cfg)
    n = cfg.instructions.batch_size
    params = [base.with_seed(derive_seed(cfg.seed, "instruction-sample", task_type, round_no, k)) for k in range(n)]
    completions = backend.generate([prompt] * n, params)
    result = Round(task_type, round_no, backend.name, [d.id for d in demos], usage=usage_of(completions))
    for k, done in enumerate(completions):
        item = f"{task_type}-r{round_no}-s{k}"
        if not done.ok:
            result.rejections.append(Rejection("backend", item, "backend_error", task_type, model=backend.name,
                                               detail={"error": done.error}))
            continue
        for p, piece in enumerate(parse_instructions(done.text, done.finish_reason == "length")):
            result.candidates += 1
            judged = _judge(piece.text, piece.truncated, pool, backend.name, demos, cfg, task_type, f"{item}-p{p}")
            (result.tasks if isinstance(judged, Task) else result.rejections).append(judged)
    return result


def _judge(text: str, truncated: bool, pool: InstructionPool, model: str, demos: Sequence, cfg: RunConfig,
           task_type: str, item: str) -> Task | Rejection:
    if truncated:
        return Rejection("instruction_filter", item, "truncated", task_type, text, model)
    icfg = cfg.instructions
    if reason := check_instruction(text, icfg.min_words, icfg.max_words):
        return Rejection("instruction_filter", item, reason, task_type, text, model)
    if text in pool.texts:
        return Rejection("instruction_filter", item, "duplicate", task_type, text, model, 1.0, {"nearest": text})
    found = pool.index.query(text, top_k=10, with_mean=True)
    if not found.is_novel:
        return Rejection("novelty", item, "rouge_l_above_threshold", task_type, text, model, found.max_score,
                         {"nearest": found.nearest, "top_similar": found.top})
    pool.add(text)
    return Task.new(task_type, text, model=model, demo_ids=[d.id for d in demos], novelty_max=found.max_score,
                    nearest=found.nearest, top_similar=found.top, novelty_mean=found.mean)
