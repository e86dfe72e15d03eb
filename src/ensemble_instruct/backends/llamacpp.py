"""Embedded llama.cpp through llama-cpp-python: one long-lived model object per member."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from . import Completion, GenParams, Prompt, cancel_event, cut_at_stop, params_for

if TYPE_CHECKING:
    from ..config import MemberConfig


# Prompts are evaluated in blocks of this many tokens aligned to absolute positions, and the cached
# prefix is reused only up to a block boundary. Every block is then computed from the same batch
# whatever the cache held before, so a prompt gives the same logits in any call order: a resumed run
# makes the same data as an uninterrupted one.
_BLOCK = 64
_quiet_callback = None
# llama-cpp-python swaps sys.stdout and sys.stderr while it loads a model; two loads at once in two
# threads would leave them swapped for good, so loads take turns.
_loading = threading.Lock()


def _silence_llama_log() -> None:
    """llama.cpp logs model loading to stderr even with verbose=False; the progress bars need it quiet."""
    global _quiet_callback
    if _quiet_callback is None:
        import ctypes

        import llama_cpp

        _quiet_callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_quiet_callback, ctypes.c_void_p(0))


class LlamaCppBackend:
    """A GGUF model in this process, living as long as the run. It keeps a few contexts ("slots"),
    each with the KV cache of its last prompt, and sends every prompt to the slot sharing the longest
    prefix with it: the few-shot blocks of several prompt families (type A and B instances, say) are
    each read once. The weights are memory-mapped, so extra slots cost only their KV cache."""

    def __init__(
        self,
        name: str,
        model_path: Path,
        instruction_tuned: bool,
        n_ctx: int = 4096,
        n_threads: int = 1,
        max_slots: int = 6,
        reuse_prefix: bool = True,  # False: every prompt is read from its first token (a baseline to measure)
    ) -> None:
        self.name = name
        self.instruction_tuned = instruction_tuned
        self.model_path = Path(model_path)
        self._settings = {"n_ctx": n_ctx, "n_threads": n_threads, "n_threads_batch": n_threads}
        self._max_slots = max_slots if reuse_prefix else 1
        self._reuse_prefix = reuse_prefix
        _silence_llama_log()
        self._lock = threading.Lock()  # one sequence at a time per model: one core each
        self._slots = [self._new_slot()]
        self._llm = self._slots[0]
        self._template = self._llm.metadata.get("tokenizer.chat_template")
        self._eos = self._llm.token_eos()

    def _new_slot(self):
        from llama_cpp import Llama

        with _loading:
            try:
                return Llama(model_path=str(self.model_path), n_batch=_BLOCK, verbose=False, **self._settings)
            except ValueError:
                raise UserError(f"{self.model_path}: cannot load the model (truncated or corrupt GGUF?)") from None

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
        cancel = cancel_event.get()
        with self._lock:
            if cancel is not None and cancel.is_set():
                return Completion("", "error", error="cancelled")
            try:
                tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
                room = self._llm.n_ctx() - len(tokens)
                if room < 1:
                    return Completion("", "error", len(tokens), error=f"prompt of {len(tokens)} tokens exceeds the context")
                slot, shared = self._pick_slot(tokens)
                cached = self._cut_to_block(slot, shared, len(tokens))
                out = slot.create_completion(
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
                    stopping_criteria=self._until(cancel),
                )
            except (RuntimeError, ValueError) as err:
                return Completion("", "error", error=f"{type(err).__name__}: {err}")
        if cancel is not None and cancel.is_set():  # cut short: not a real completion
            return Completion("", "error", error="cancelled")
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

    @staticmethod
    def _shared(slot: Any, tokens: list[int]) -> int:
        done = slot._input_ids[: slot.n_tokens].tolist()
        shared = 0
        for a, b in zip(done, tokens):
            if a != b:
                break
            shared += 1
        return shared

    def _pick_slot(self, tokens: list[int]) -> tuple[Any, int]:
        """The slot sharing the longest prefix, and that length; a fresh slot when none shares a block
        (a new one while there is room, else the least recently used). Used slots move to the end."""
        if not self._reuse_prefix:
            return self._slots[0], 0
        shared = {id(slot): self._shared(slot, tokens) for slot in self._slots}
        best = max(self._slots, key=lambda slot: shared[id(slot)])
        if shared[id(best)] >= _BLOCK:
            self._slots.remove(best)
        elif len(self._slots) < self._max_slots:
            best = self._new_slot()
            shared[id(best)] = 0
        else:
            best = self._slots.pop(0)
        self._slots.append(best)
        return best, shared[id(best)]

    @staticmethod
    def _cut_to_block(slot: Any, shared: int, prompt_len: int) -> int:
        """Cut the slot's cache back to the last block boundary within the shared prefix; return its length."""
        # at least the last prompt token is always evaluated, to get fresh logits
        aligned = min(shared, prompt_len - 1) // _BLOCK * _BLOCK
        slot.n_tokens = min(slot.n_tokens, aligned)
        return aligned

    @staticmethod
    def _until(cancel: threading.Event | None):
        if cancel is None:
            return None
        from llama_cpp import StoppingCriteriaList

        return StoppingCriteriaList([lambda input_ids, scores: cancel.is_set()])

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
            for slot in self._slots:
                slot.close()
