"""Scoring speed and fidelity: the same greedy answers through llama.cpp and through transformers, side by side.

    python benchmarks/evaluation.py [MODEL] [--tasks FILE ...] [--limit 48]

MODEL is a base (default gemma-3-270m) or an adapter folder made by `train` (then the adapter's answers are
the ones compared). For each task file, both engines answer the same first --limit items with empty caches;
the script prints seconds per answer of each and their ratio, how many answers agree exactly, and the
Rouge-L of each. llama.cpp then answers every item of the file, for the time a whole file takes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ensemble_instruct.measure.answers import MAX_NEW_TOKENS, open_target
from ensemble_instruct.measure.evaluation import _cache_file, _cached, evaluate
from ensemble_instruct.measure.tasks import file_hash, load_tasks

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "ensemble_instruct" / "data" / "eval_tasks.jsonl"


def timed(model: str, task: Path, limit: int | None, engine: str) -> tuple[float, dict, dict[int, str]]:
    """Seconds per answer, and the scores and answers of the subject of interest (the adapter, or the base)."""
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        result = evaluate(model, [task], limit=limit, cache=Path(cache), engine=engine)
        seconds = time.perf_counter() - started
        subject = open_target(model).subjects[-1]
        answers = _cached(_cache_file(Path(cache), subject, file_hash(task), MAX_NEW_TOKENS, engine))
    scores = result["files"][str(task)][result["subjects"][-1]]
    answered = scores["n"] * len(result["subjects"])  # an adapter is scored beside its base
    return seconds / answered, scores, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="gemma-3-270m")
    parser.add_argument("--tasks", action="append", type=Path, default=[])
    parser.add_argument("--limit", type=int, default=48, help="items both engines answer")
    args = parser.parse_args()
    for task in args.tasks or [SHIPPED]:
        fast, fast_scores, fast_answers = timed(args.model, task, args.limit, "llamacpp")
        slow, slow_scores, slow_answers = timed(args.model, task, args.limit, "transformers")
        same = sum(fast_answers[i] == slow_answers[i] for i in fast_answers)
        print(f"{task.name}, first {fast_scores['n']} items: transformers {slow:.2f} s per answer, llama.cpp "
              f"{fast:.2f} s: {slow / fast:.1f}x; the same answer to {same} of {fast_scores['n']} items; Rouge-L "
              f"{slow_scores['overall']:.2f} (transformers) vs {fast_scores['overall']:.2f} (llama.cpp)")
        whole = len(load_tasks(task))
        if whole > args.limit:
            per_answer, _, _ = timed(args.model, task, None, "llamacpp")
            print(f"{task.name}, all {whole} items through llama.cpp: {per_answer * whole / 60:.1f} minutes")


if __name__ == "__main__":
    main()
