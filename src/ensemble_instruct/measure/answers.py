"""The model under test and what answers for it: llama.cpp from the base's GGUF (an adapter as a GGUF LoRA),
or transformers with PEFT."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import GenParams
from ..errors import UserError
from ..models import resolve_model, sha256_of
from .base import load_model, resolve_base
from .train import read_record

MAX_NEW_TOKENS = 128  # SuperNI's own evaluation limit for targets
# The template's header marker ends an answer: base models run on into a new example, under the template's
# headers or ones they make up ("### Output:", "### Answer:").
STOP_STRINGS = ("###",)


def cut_answer(text: str) -> str:
    """The answer up to the next header marker, stripped."""
    for stop in STOP_STRINGS:
        text = text.split(stop, 1)[0]
    return text.strip()


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
    (lora_gguf) and applied on top. Prompts are decoded together as parallel sequences, in one context per
    subject that stays open from one block of answers to the next."""

    name = "llamacpp"
    # Sequences per decode step, measured on the 252 user-oriented instructions with Gemma-3-270M on two cores:
    # 8 took 2.55 min, 16 took 2.71 and 32 took 3.29. Every live sequence pays for the output layer (262k words
    # for Gemma), so more of them add work faster than they share the weights' reads.
    sequences = 8
    # Answers made (and cached) per call: a kill loses at most one block, and each block's last, longest answers
    # decode with the step part empty (16 sequences: 2.71 min in blocks of 252 against 2.91 in blocks of 128).
    block = 256

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf
        self._open: tuple[Subject, Any] | None = None

    def answer(self, subject: Subject, prompts: list[str], max_new_tokens: int) -> list[str]:
        params = GenParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=STOP_STRINGS)
        return [cut_answer(done.text) for done in self._backend(subject).generate(prompts, params)]

    def _backend(self, subject: Subject):
        if self._open is not None and self._open[0] == subject:
            return self._open[1]
        from ..backends.llamacpp import LlamaCppBackend

        self.close()
        lora = None
        if subject.adapter is not None:
            from .lora_gguf import convert_adapter

            lora = convert_adapter(subject.adapter, self.gguf)
        backend = LlamaCppBackend(
            subject.label, self.gguf, instruction_tuned=False, lora_path=lora, max_seqs=self.sequences
        )
        self._open = subject, backend
        return backend

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


class TransformersAnswers:
    """Greedy answers through transformers (and PEFT for an adapter), batched with left padding; the model is
    loaded once for the base and its adapter."""

    name = "transformers"
    block = 64  # answers made (and cached) per call: slow on a CPU, so a kill should lose little

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

    def close(self) -> None:
        self._loaded = None


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
