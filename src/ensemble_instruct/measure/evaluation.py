"""Rouge-L of a model's greedy answers to held-out tasks, SuperNI-style, per task and overall.

A model is a base model (registry name, GGUF file, HF folder) or an adapter folder made by `train`; an
adapter is scored beside its untuned base, zero-shot, in the same prompt format. Answers are cached per item
under the model's identity and the task file's hash, so a base is scored once and a killed evaluation resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import UserError
from ..models import cache_dir
from .answers import (
    MAX_NEW_TOKENS,
    STOP_STRINGS,
    LlamaCppAnswers,
    Subject,
    TransformersAnswers,
    cut_answer,
    open_target,
    pick_engine,
)
from .prompt import PROMPT_FORMAT, format_prompt
from .tasks import METRIC, EvalItem, file_hash, load_tasks, rouge_l, score, select

__all__ = ["MAX_NEW_TOKENS", "EvalItem", "cut_answer", "evaluate", "load_tasks", "rouge_l", "score", "select"]


def default_cache() -> Path:
    return cache_dir().parent / "evaluations"


def _cache_file(cache: Path, subject: Subject, tasks_hash: str, max_new_tokens: int, engine: str) -> Path:
    settings: list[Any] = [PROMPT_FORMAT, max_new_tokens, STOP_STRINGS, engine]
    if engine == "llamacpp" and subject.adapter is not None:
        # before a GGUF LoRA was checked against its adapter's weights, an adapter trained again in its folder
        # was answered through the old one's GGUF: a new key leaves those answers behind (the base's stay)
        settings.append("gguf-lora-checked")
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:8]
    return cache / f"{subject.identity.replace('+', '-')}-{tasks_hash}-{key}.jsonl"


def _cached(path: Path) -> dict[int, str]:
    answers: dict[int, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that item is answered again
                continue
            answers[row["index"]] = row["prediction"]
    return answers


def evaluate(
    spec: str,
    task_files: list[Path],
    limit: int | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 8,
    cache: Path | None = None,
    console: Console | None = None,
    engine: str = "auto",
) -> dict[str, Any]:
    """Score MODEL (and, for an adapter, its zero-shot base) on each task file; answers come from the cache
    where they exist."""
    if not task_files:
        raise UserError("evaluate: give at least one --tasks FILE")
    files = [(Path(f), load_tasks(Path(f))) for f in task_files]  # bad files fail before a model loads
    cache = Path(cache) if cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    target = open_target(spec)
    chosen = pick_engine(target, engine)
    answerer: LlamaCppAnswers | TransformersAnswers
    if chosen == "llamacpp" and target.gguf is not None:
        answerer = LlamaCppAnswers(target.gguf)
    else:
        answerer = TransformersAnswers(target, batch_size)
    results: dict[str, Any] = {
        "model": spec,
        "engine": chosen,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "prompt_format": PROMPT_FORMAT,
        "metric": METRIC,
        "limit": limit,
        "subjects": [s.label for s in target.subjects],
        "files": {},
        "seconds": {},  # spent answering, per subject (0 when every answer came from the cache)
    }
    # Subject by subject, so that llama.cpp loads each one (the base, then the base with the adapter) once.
    try:
        for subject in target.subjects:
            results["seconds"][subject.label] = 0.0
            for path, items in files:
                indices = select(items, limit)
                cache_file = _cache_file(cache, subject, file_hash(path), max_new_tokens, answerer.name)
                started = time.perf_counter()
                answers, made = _answer(
                    answerer,
                    subject,
                    items,
                    indices,
                    cache_file,
                    max_new_tokens,
                    console,
                    f"{subject.label} on {path.name}",
                )
                if made:
                    results["seconds"][subject.label] += round(time.perf_counter() - started, 1)
                results["files"].setdefault(str(path), {})[subject.label] = score(items, indices, answers)
    finally:
        answerer.close()
    return results


def _answer(
    answerer: LlamaCppAnswers | TransformersAnswers,
    subject: Subject,
    items: list[EvalItem],
    indices: list[int],
    path: Path,
    max_new_tokens: int,
    console: Console | None,
    label: str,
) -> tuple[dict[int, str], int]:
    """The subject's answers to the chosen items, from the cache file where they exist, and how many were made
    now. One process at a time answers into a cache file (a second waits, then finds the answers there), and
    each block is written as it is made, so a kill keeps what was done."""
    with FileLock(str(path) + ".lock"):
        answers = _cached(path)
        todo = [i for i in indices if i not in answers]
        if not todo:
            return answers, 0
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            disable=console is None,
        )
        with progress, open(path, "a", encoding="utf-8") as fh:
            bar = progress.add_task(label, total=len(indices), completed=len(indices) - len(todo), rate="")
            started = time.perf_counter()
            for start in range(0, len(todo), answerer.block):
                block = todo[start : start + answerer.block]
                prompts = [format_prompt(items[i].instruction, items[i].input) for i in block]
                for i, text in zip(block, answerer.answer(subject, prompts, max_new_tokens)):
                    answers[i] = text
                    fh.write(json.dumps({"index": i, "prediction": text}, ensure_ascii=False) + "\n")
                fh.flush()
                rate = (start + len(block)) / (time.perf_counter() - started)
                progress.update(bar, advance=len(block), rate=f"{rate:.2f} answers/s")
    return answers, len(todo)
