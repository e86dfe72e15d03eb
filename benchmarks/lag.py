"""What sampling several instruction rounds together (`instructions.lag`) does to the instructions themselves,
with the default generator on llama.cpp: stage 1 alone, lag 1 (the method) against larger lags, same seed.

    python benchmarks/lag.py [--rounds 24] [--lag 1 8 16] [--type A]

Round k draws its synthetic demos from the instructions accepted up to round k - lag; the novelty filter still
judges every round in order. For each lag: the share of candidate instructions accepted (keep rate), the mean
highest Rouge-L of an accepted instruction against the pool before it (lower: more novel), the mean pairwise
Rouge-L among the accepted instructions (lower: more diverse), and distinct first words. The rounds that can be
sampled together are sent as one call, as a server cluster would receive them.
"""

from __future__ import annotations

import argparse
import statistics

from ensemble_instruct.backends import make_backend
from ensemble_instruct.config import build_config
from ensemble_instruct.instructions import InstructionPool, Round, instruction_params, judge_round, round_prompt
from ensemble_instruct.records import derive_seed
from ensemble_instruct.rouge import rouge_l
from ensemble_instruct.seeds import load_seeds, split_by_type


def accepted_instructions(cfg, generator, seeds, task_type: str, rounds: int, lag: int) -> tuple[list, int]:
    """Every accepted task of `rounds` rounds at this lag, and the number of candidates judged."""
    pool = InstructionPool(cfg.instructions.novelty_threshold)
    for seed in seeds:
        pool.add(seed.instruction)
    synthetic, after, candidates = [], [], 0
    n = cfg.instructions.batch_size
    for first in range(0, rounds, lag):  # rounds first .. first+lag-1 only need rounds up to first-1
        batch = range(first, min(first + lag, rounds))
        drafted = []
        for k in batch:
            visible = synthetic[: after[k - lag]] if k >= lag else []
            prompt, demos = round_prompt(task_type, k, seeds, visible, cfg)
            drafted.append((Round(task_type, k, generator.name, [d.id for d in demos]), prompt, demos))
        prompts = [p for _, p, _ in drafted for _ in range(n)]
        params = [
            instruction_params(cfg).with_seed(derive_seed(cfg.seed, "instruction-sample", task_type, r.round, s))
            for r, _, _ in drafted
            for s in range(n)
        ]
        completions = generator.generate(prompts, params)
        for i, (result, _, demos) in enumerate(drafted):
            judge_round(result, completions[i * n : (i + 1) * n], pool, demos, cfg)
            candidates += result.candidates
            synthetic.extend(result.tasks)
            after.append(len(synthetic))
    return synthetic, candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--lag", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--type", choices=["A", "B"], default="A")
    args = parser.parse_args()
    cfg = build_config({})
    member = cfg.members_with("instructions")[0]
    generator = make_backend(member)
    seeds = split_by_type(load_seeds("default"))[args.type]
    print(f"generator {member.model}, type {args.type}, {args.rounds} rounds of {cfg.instructions.batch_size}")
    header = "lag | candidates | accepted | keep rate | novelty max | pairwise Rouge-L | distinct first words"
    print(f"| {header} |")
    print("|---|---|---|---|---|---|---|")
    try:
        for lag in args.lag:
            tasks, candidates = accepted_instructions(cfg, generator, seeds, args.type, args.rounds, lag)
            texts = [t.instruction for t in tasks]
            pairs = [rouge_l(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :]]
            print(
                f"| {lag} | {candidates} | {len(tasks)} | {len(tasks) / max(1, candidates):.1%} | "
                f"{statistics.mean(t.novelty_max for t in tasks):.3f} | {statistics.mean(pairs):.3f} | "
                f"{len({t.split()[0].lower() for t in texts})} |",
                flush=True,
            )
    finally:
        generator.close()


if __name__ == "__main__":
    main()
