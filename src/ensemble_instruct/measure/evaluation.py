"""Rouge-L of a model's greedy answers to held-out tasks, SuperNI-style, per task and overall.

A model is a base model (registry name, GGUF file, HF folder) or an adapter folder made by `train`; an
adapter is scored beside its untuned base, zero-shot, in the same prompt format. Answers are cached per item
under the model's identity and the task file's hash, so a base is scored once and a killed evaluation resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import rouge
from ..backends import GenParams
from ..errors import UserError
from ..models import cache_dir, resolve_model, sha256_of
from .train import PROMPT_FORMAT, format_prompt, load_model, read_record, resolve_base

MAX_NEW_TOKENS = 128  # SuperNI's own evaluation limit for targets
METRIC = "rouge_score rougeL F-measure, use_stemmer=True, default tokenizer; max over references, mean, x100"
# The template's header marker ends an answer: base models run on into a new example, under the template's
# headers or ones they make up ("### Output:", "### Answer:").
STOP_STRINGS = ("###",)
ANSWER_BLOCK = 64  # answers made (and cached) per call: enough for full decode batches


@dataclass(frozen=True)
class EvalItem:
    task: str
    instruction: str
    input: str
    references: tuple[str, ...]


def _field(path: Path, number: int, record: dict[str, Any], name: str, kind: type) -> Any:
    value = record.get(name)
    if value is None:
        raise UserError(f"{path}:{number}: field {name}: missing")
    if not isinstance(value, kind):
        raise UserError(f"{path}:{number}: field {name}: must be a {kind.__name__}")
    return value


def _items_of(path: Path, number: int, record: dict[str, Any]) -> list[EvalItem]:
    """One line in either shape: SuperNI-like (definition, input, references) or user-oriented
    (instruction, instances: [{input, output}])."""
    if "definition" in record:
        refs = _field(path, number, record, "references", list)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise UserError(f"{path}:{number}: field references: must be a non-empty list of strings")
        task = record.get("task") or record.get("id") or f"line {number}"
        return [
            EvalItem(
                str(task),
                _field(path, number, record, "definition", str),
                _field(path, number, record, "input", str),
                tuple(refs),
            )
        ]
    if "instruction" in record or "instances" in record:
        instruction = _field(path, number, record, "instruction", str)
        instances = _field(path, number, record, "instances", list)
        task = str(record.get("task") or record.get("id") or f"line {number}")
        items = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise UserError(f"{path}:{number}: field instances[{i}]: must be an object")
            for name in ("input", "output"):
                if not isinstance(instance.get(name), str):
                    raise UserError(f"{path}:{number}: field instances[{i}].{name}: missing or not a string")
            items.append(EvalItem(task, instruction, instance["input"], (instance["output"],)))
        return items
    raise UserError(f"{path}:{number}: field definition: missing (or instruction and instances)")


def load_tasks(path: Path) -> list[EvalItem]:
    """Every evaluation item of a JSONL task file; errors name the file, the line and the field."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such task file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    items: list[EvalItem] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: must be a JSON object")
        items.extend(_items_of(path, number, record))
    if not items:
        raise UserError(f"{path}: holds no evaluation items")
    return items


def select(items: list[EvalItem], limit: int | None) -> list[int]:
    """Indices of the items to score: all, or the first `limit` taken in turn from each task, so a small
    limit still covers every task."""
    if limit is None or limit >= len(items):
        return list(range(len(items)))
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_task[item.task].append(index)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for indices in by_task.values():
            if depth < len(indices) and len(chosen) < limit:
                chosen.append(indices[depth])
        depth += 1
    return sorted(chosen)


def rouge_l(prediction: str, references: tuple[str, ...] | list[str]) -> float:
    """Rouge-L F-measure (stemmed) of a prediction against its best reference, in 0..1 (float-equal to
    rouge_score's, see rouge.py)."""
    return max(rouge.rouge_l(ref, prediction, stem=True) for ref in references)


def cut_answer(text: str) -> str:
    """The answer up to the next header marker, stripped."""
    for stop in STOP_STRINGS:
        text = text.split(stop, 1)[0]
    return text.strip()


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# -- the model under test -------------------------------------------------------------------------------

ENGINES = ("auto", "llamacpp", "transformers")


@dataclass
class Subject:
    """A model to score: a label for tables and the identity its cached answers are filed under."""

    label: str
    identity: str  # the base weights' hash, plus the adapter's
    adapter: Path | None  # None: the base itself, zero-shot


@dataclass
class Target:
    """What `evaluate MODEL` names: a base (registry name, GGUF file or HF folder) and, for an adapter folder
    made by train, the adapter; the base is scored too, zero-shot, in the same table."""

    base: str
    gguf: Path | None  # the base's GGUF, for llama.cpp; None for an HF folder
    subjects: list[Subject]


def open_target(spec: str) -> Target:
    record = read_record(Path(spec)) if Path(spec).is_dir() else None
    if record is None and Path(spec).is_dir() and (Path(spec) / "adapter_config.json").is_file():
        raise UserError(f"{spec}: an adapter folder without training_record.json; evaluate adapters made by train")
    base = record["base"] if record else spec
    folder = Path(base).expanduser()
    if folder.is_dir():
        gguf, identity = None, resolve_base(base).identity
    else:
        gguf, info = resolve_model(base)
        identity = (info.sha256 if info is not None else sha256_of(gguf))[:16]
    subjects = [Subject(f"{base} (zero-shot)", identity, None)]
    if record:
        adapter_hash = hashlib.sha256((Path(spec) / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]
        subjects.append(Subject(Path(spec).name, f"{identity}+{adapter_hash}", Path(spec)))
    return Target(base, gguf, subjects)


def pick_engine(target: Target, engine: str) -> str:
    """llama.cpp where the base is a GGUF and no GPU is there (several times faster on a CPU); transformers
    on a GPU, for HF folders, or when asked for."""
    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}")
    if engine == "llamacpp" and target.gguf is None:
        raise UserError(f"{target.base}: llama.cpp needs a GGUF base; this one is an HF folder")
    if engine != "auto":
        return engine
    return "llamacpp" if target.gguf is not None and not _cuda() else "transformers"


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class LlamaCppAnswers:
    """Greedy answers through llama.cpp from the base's GGUF; an adapter is converted once to a GGUF LoRA
    (lora_gguf) and applied on top. Prompts are decoded together as parallel sequences."""

    name = "llamacpp"

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf

    def answer(self, subject: Subject, prompts: list[str], max_new_tokens: int) -> list[str]:
        from ..backends.llamacpp import LlamaCppBackend

        lora = None
        if subject.adapter is not None:
            from .lora_gguf import convert_adapter

            lora = convert_adapter(subject.adapter, self.gguf)
        backend = LlamaCppBackend(subject.label, self.gguf, instruction_tuned=False, lora_path=lora)
        try:
            params = GenParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=STOP_STRINGS)
            return [cut_answer(done.text) for done in backend.generate(prompts, params)]
        finally:
            backend.close()


class TransformersAnswers:
    """Greedy answers through transformers (and PEFT for an adapter), batched with left padding; the model is
    loaded once for the base and its adapter."""

    name = "transformers"

    def __init__(self, target: Target, batch_size: int) -> None:
        self.target, self.batch_size = target, batch_size
        self._loaded: tuple[Any, Any] | None = None

    def answer(self, subject: Subject, prompts: list[str], max_new_tokens: int) -> list[str]:
        if self._loaded is None:
            model, tokenizer = load_model(resolve_base(self.target.base))
            tuned = next((s.adapter for s in self.target.subjects if s.adapter is not None), None)
            if tuned is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(tuned))
            self._loaded = model, tokenizer
        model, tokenizer = self._loaded
        with _adapter(model, subject.adapter is not None):
            return generate_answers(model, tokenizer, prompts, max_new_tokens, self.batch_size)


def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers, batched with left padding; prompts of similar length go together."""
    import torch

    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                stop_strings=list(STOP_STRINGS),
                tokenizer=tokenizer,
                pad_token_id=tokenizer.pad_token_id,
                top_p=None,
                top_k=None,
                temperature=None,
            )
        for i, row in zip(chunk, out[:, enc["input_ids"].shape[1] :]):
            answers[i] = cut_answer(tokenizer.decode(row, skip_special_tokens=True))
    return answers


# -- caching and scoring ---------------------------------------------------------------------------------


def default_cache() -> Path:
    return cache_dir().parent / "evaluations"


def _cache_file(cache: Path, subject: Subject, tasks_hash: str, max_new_tokens: int, engine: str) -> Path:
    settings = json.dumps([PROMPT_FORMAT, max_new_tokens, STOP_STRINGS, engine])
    key = hashlib.sha256(settings.encode()).hexdigest()[:8]
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


def score(items: list[EvalItem], indices: list[int], answers: dict[int, str]) -> dict[str, Any]:
    """Per-task and overall mean Rouge-L x100 of the chosen items, and each item's score in their order (what
    a paired comparison of two models resamples)."""
    every = [rouge_l(answers[i], items[i].references) for i in indices]
    per_task: dict[str, list[float]] = defaultdict(list)
    for i, value in zip(indices, every):
        per_task[items[i].task].append(value)
    return {
        "overall": round(100 * sum(every) / len(every), 2),
        "n": len(every),
        "tasks": {t: {"rougeL": round(100 * sum(s) / len(s), 2), "n": len(s)} for t, s in per_task.items()},
        "items": [round(100 * value, 2) for value in every],
    }


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
    }
    for path, items in files:
        indices = select(items, limit)
        scores = {}
        for subject in target.subjects:
            cache_file = _cache_file(cache, subject, file_hash(path), max_new_tokens, answerer.name)
            answers = _answer(
                answerer,
                subject,
                items,
                indices,
                cache_file,
                max_new_tokens,
                console,
                f"{subject.label} on {path.name}",
            )
            scores[subject.label] = score(items, indices, answers)
        results["files"][str(path)] = scores
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
) -> dict[int, str]:
    """The subject's answers to the chosen items, from the cache file where they exist. One process at a time
    answers into a cache file (a second waits, then finds the answers there), and each block is written as it
    is made, so a kill keeps what was done."""
    with FileLock(str(path) + ".lock"):
        answers = _cached(path)
        todo = [i for i in indices if i not in answers]
        if not todo:
            return answers
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
            for start in range(0, len(todo), ANSWER_BLOCK):
                block = todo[start : start + ANSWER_BLOCK]
                prompts = [format_prompt(items[i].instruction, items[i].input) for i in block]
                for i, text in zip(block, answerer.answer(subject, prompts, max_new_tokens)):
                    answers[i] = text
                    fh.write(json.dumps({"index": i, "prediction": text}, ensure_ascii=False) + "\n")
                fh.flush()
                rate = (start + len(block)) / (time.perf_counter() - started)
                progress.update(bar, advance=len(block), rate=f"{rate:.2f} answers/s")
    return answers


class _adapter:
    """A PEFT model with its adapter on (the tuned answers) or off (the base's own); anything else as it is."""

    def __init__(self, model, on: bool) -> None:
        self.context = model.disable_adapter() if hasattr(model, "disable_adapter") and not on else None

    def __enter__(self) -> None:
        if self.context is not None:
            self.context.__enter__()

    def __exit__(self, *exc) -> None:
        if self.context is not None:
            self.context.__exit__(*exc)
