"""Embedded llama.cpp through llama-cpp-python: one long-lived model object per member."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import Completion, GenParams, Message, Prompt, cut_at_stop, params_for

if TYPE_CHECKING:
    from ..config import MemberConfig


# Prompts are evaluated in blocks of this many tokens aligned to absolute positions, and the cached
# prefix is reused only up to a block boundary. Every block is then computed from the same batch
# whatever the cache held before, so a prompt gives the same logits in any call order: a resumed run
# makes the same data as an uninterrupted one.
_BLOCK = 64


class LlamaCppBackend:
    """A GGUF model in this process. The object lives as long as the run, so the KV cache of the
    longest prefix shared with the previous prompt is reused: few-shot blocks are read once."""

    def __init__(
        self,
        name: str,
        model_path: Path,
        instruction_tuned: bool,
        n_ctx: int = 4096,
        n_threads: int = 1,
    ) -> None:
        from llama_cpp import Llama

        self.name = name
        self.instruction_tuned = instruction_tuned
        self.model_path = Path(model_path)
        self._lock = threading.Lock()  # one sequence at a time per model object
        self._llm = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=_BLOCK,
            verbose=False,
        )
        self._template = self._llm.metadata.get("tokenizer.chat_template")
        self._eos = self._llm.token_eos()

    @classmethod
    def from_member(cls, member: MemberConfig) -> LlamaCppBackend:
        from ..models import resolve_model

        path, info = resolve_model(member.model)
        kind = member.kind or (info.kind if info else "instruct")
        return cls(member.name, path, kind == "instruct", member.n_ctx, member.n_threads)

    def generate(self, prompts: Sequence[Prompt], params: GenParams | Sequence[GenParams]) -> list[Completion]:
        return [self._one(p, gp) for p, gp in zip(prompts, params_for(prompts, params))]

    def render(self, prompt: Prompt) -> str:
        """Chat messages through the model's own template; plain text as it is."""
        if isinstance(prompt, str):
            return prompt
        if not self._template:  # a base model: no template, so the turns become plain text
            return "\n\n".join(m["content"] for m in prompt)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos_text = self._llm.detokenize([self._eos], special=True).decode("utf-8", "ignore")
        bos_text = self._llm.detokenize([self._llm.token_bos()], special=True).decode("utf-8", "ignore")
        return Jinja2ChatFormatter(self._template, eos_text, bos_text)(messages=prompt).prompt

    def _one(self, prompt: Prompt, params: GenParams) -> Completion:
        started = time.perf_counter()
        text = self.render(prompt)
        with self._lock:
            try:
                tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
                room = self._llm.n_ctx() - len(tokens)
                if room < 1:
                    return Completion("", "error", len(tokens), error=f"prompt of {len(tokens)} tokens exceeds the context")
                cached = self._cached_prefix(tokens)
                out = self._llm.create_completion(
                    tokens,
                    max_tokens=min(params.max_new_tokens, room),
                    temperature=params.temperature,
                    top_k=params.top_k if params.temperature > 0 else 1,
                    top_p=params.top_p,
                    min_p=0.0,
                    repeat_penalty=1.0,
                    presence_penalty=params.presence_penalty,
                    stop=list(params.stop),
                    seed=params.seed,
                    logits_processor=self._min_tokens(len(tokens), params.min_new_tokens),
                )
            except (RuntimeError, ValueError) as err:
                return Completion("", "error", error=f"{type(err).__name__}: {err}")
        choice, usage = out["choices"][0], out["usage"]
        # llama.cpp applies stop strings itself; cut again in case a stop spans a token boundary oddly
        body, _ = cut_at_stop(choice["text"], params.stop)
        return Completion(
            text=body,
            finish_reason=choice["finish_reason"] or "stop",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            cached_tokens=cached,
            seconds=time.perf_counter() - started,
        )

    def _cached_prefix(self, tokens: list[int]) -> int:
        """Cut the model's cache back to the last block boundary it shares with tokens; return its length."""
        done = self._llm._input_ids[: self._llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(done, tokens):
            if a != b:
                break
            shared += 1
        # at least the last prompt token is always evaluated, to get fresh logits
        aligned = min(shared, len(tokens) - 1) // _BLOCK * _BLOCK
        self._llm.n_tokens = min(self._llm.n_tokens, aligned)
        return aligned

    def _min_tokens(self, prompt_len: int, min_new: int):
        """Ban end-of-sequence until min_new tokens exist; stop strings still apply from the first token."""
        if min_new <= 0:
            return None
        from llama_cpp import LogitsProcessorList

        banned = [t for t in {self._eos, *self._end_of_turn_ids()} if t >= 0]

        def ban_eos(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if len(input_ids) - prompt_len < min_new:
                scores[banned] = -np.inf
            return scores

        return LogitsProcessorList([ban_eos])

    def _end_of_turn_ids(self) -> list[int]:
        eot = getattr(self._llm._model, "token_eot", None)
        return [eot()] if eot else []

    def close(self) -> None:
        with self._lock:
            self._llm.close()
