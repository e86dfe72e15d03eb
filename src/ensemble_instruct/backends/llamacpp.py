"""Embedded llama.cpp through llama-cpp-python: one long-lived model per member, which decodes the prompts
of a call together, as parallel sequences of one context.

Several sequences per decode step make more tokens per second than one (on two CPU cores, 8 sequences
after a 1,100-token few-shot block give 1.7 times the rate of one: the weights are read once per step),
and the prompts of a call usually share a few-shot block, which is then read once for all of them. Two rules
keep a run reproducible, so that a resumed run makes the same data as an uninterrupted one:

- A sequence's numbers depend on the other sequences decoded with it, so the schedule is a function of the
  call alone: its prompts are sorted into a canonical order, grouped by shared prefix, and each group is
  decoded with at most max_seqs sequences live, a finished one handing its place to the next job in order.
- The prefix kept from an earlier call is reused only up to a block boundary, and prompts are evaluated
  in blocks aligned to absolute positions, so every block is computed from the same input whatever the
  cache held before.

The thread count does not change llama.cpp's results, so a model that decodes while the others are idle
borrows their cores.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from . import Completion, GenParams, Likelihood, Prompt, cancel_event, cut_at_stop, params_for
from .llamacpp_context import (
    BLOCK,
    Cancelled,
    Decoding,
    Job,
    Slot,
    common_prefix,
    cores,
    has_stop,
    loading,
    make_sampler,
    prefix_groups,
    shared_length,
    silence_llama_log,
)

if TYPE_CHECKING:
    from ..config import MemberConfig


class LlamaCppBackend:
    """A GGUF model in this process, living as long as the run. It keeps a few contexts ("slots"), each
    with the KV cache of its last shared prefix, and sends every call to the slot sharing the longest
    prefix with it: the few-shot blocks of several prompt families (type A and B instances, say) are each
    read once. The weights are memory-mapped, so extra slots cost only their KV cache."""

    def __init__(
        self,
        name: str,
        model_path: Path,
        instruction_tuned: bool,
        n_ctx: int = 4096,
        n_threads: int | None = None,  # None: share the machine's cores with the other models
        max_slots: int = 6,
        reuse_prefix: bool = True,  # False: every prompt is read from its first token (a baseline to measure)
        max_seqs: int = 16,  # sequences per decode step; 1 decodes the prompts one after another
        lora_path: Path | None = None,  # a GGUF LoRA adapter applied to every context
    ) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        self.name = name
        self.instruction_tuned = instruction_tuned
        self.model_path = Path(model_path)
        self.n_ctx, self.n_threads = n_ctx, n_threads
        self._max_slots = max_slots if reuse_prefix else 1
        self._reuse_prefix = reuse_prefix
        self._max_seqs = max_seqs
        # a batch may hold its shared prefix plus, for every sequence, its own prompt and completion
        self._cells = n_ctx * 2 if max_seqs > 1 else n_ctx
        silence_llama_log()
        self._lock = threading.Lock()  # guards the list of slots; each slot decodes one batch at a time
        with loading:
            try:
                self._model = LlamaModel(
                    path_model=str(self.model_path), params=llama_cpp.llama_model_default_params(), verbose=False
                )
            except ValueError:
                raise UserError(f"{self.model_path}: cannot load the model (truncated or corrupt GGUF?)") from None
            self._lora = None
            if lora_path is not None:
                self._lora = llama_cpp.llama_adapter_lora_init(self._model.model, str(lora_path).encode())
                if not self._lora:
                    self._model.close()
                    raise UserError(f"{lora_path}: llama.cpp cannot load this LoRA adapter for {self.model_path}")
        self._vocab = self._model.vocab
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._end_ids = frozenset(t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))
        self._pieces: dict[int, bytes] = {}
        self._template = self._model.metadata().get("tokenizer.chat_template")
        self._slots: list[Slot] = []

    @classmethod
    def from_member(cls, member: MemberConfig) -> LlamaCppBackend:
        from ..models import member_kind, resolve_model

        path, _ = resolve_model(member.model)
        return cls(member.name, path, member_kind(member) == "instruct", member.n_ctx, member.n_threads)

    def render(self, prompt: Prompt) -> str:
        """Chat messages through the model's own template; plain text as it is."""
        if isinstance(prompt, str):
            return prompt
        if not self._template:  # a base model: no template, so the turns become plain text
            return "\n\n".join(m["content"] for m in prompt)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos_text = self._piece(self._model.token_eos(), special=True).decode("utf-8", "ignore")
        bos_text = self._piece(self._model.token_bos(), special=True).decode("utf-8", "ignore")
        formatter = Jinja2ChatFormatter(self._template, eos_text, bos_text)
        return formatter(messages=prompt).prompt  # type: ignore[arg-type]  # plain role/content dicts

    # --- a call -------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: GenParams | Sequence[GenParams]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(prompts)
        jobs = []
        for index, (prompt, gp) in enumerate(zip(prompts, params_for(prompts, params))):
            tokens = self._model.tokenize(self.render(prompt).encode("utf-8"), True, True)
            room = self.n_ctx - len(tokens)
            if room < 1:
                results[index] = Completion(
                    "", "error", len(tokens), error=f"prompt of {len(tokens)} tokens exceeds the context"
                )
            else:
                jobs.append(Job(index, tokens, gp, min(gp.max_new_tokens, room)))
        with cores.working():
            for group in prefix_groups(sorted(jobs, key=Job.key)):
                for job, completion in zip(group, self._run_group(group)):
                    results[job.index] = completion
        return results  # type: ignore[return-value]

    def score(self, prompt: Prompt, answers: Sequence[str]) -> list[Likelihood]:
        """How likely this model finds each answer to the prompt: the sum of the log-probabilities of the
        answer's tokens (and, for a chat prompt, of the end of turn after them). Prefill only, no decoding;
        the prompt is read once for all answers."""
        import llama_cpp
        import numpy as np

        text = self.render(prompt)
        end = (
            self._piece(self._model.token_eos(), special=True).decode("utf-8", "ignore")
            if not isinstance(prompt, str)
            else ""
        )
        head = self._model.tokenize(text.encode("utf-8"), True, True)
        shared = len(head) - 1  # the last prompt token is read with each answer, for its first logits
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        out = []
        with cores.working():
            slot = self._acquire_slot(head[:shared])
            try:
                self._prepare(slot, head[:shared])
                for answer in answers:
                    full = self._model.tokenize((text + answer + end).encode("utf-8"), True, True)
                    start = common_prefix(head, full)
                    targets = full[start:]
                    if start < len(head) - 1 or not targets or len(full) > self.n_ctx:
                        out.append(Likelihood(float("nan"), len(targets)))
                        continue
                    llama_cpp.llama_memory_seq_cp(slot.context.memory, 0, 1, 0, shared)
                    rows = [(1, pos, full[pos], True) for pos in range(shared, len(full) - 1)]
                    total = 0.0
                    for begin in range(0, len(rows), BLOCK):
                        chunk = rows[begin : begin + BLOCK]
                        self._decode(slot, chunk)
                        for row, (_, pos, _, _) in enumerate(chunk):
                            if pos + 1 >= start:
                                logits = np.ctypeslib.as_array(
                                    llama_cpp.llama_get_logits_ith(slot.context.ctx, row), shape=(n_vocab,)
                                )
                                top = logits.max()
                                total += float(logits[full[pos + 1]] - top - np.log(np.exp(logits - top).sum()))
                    llama_cpp.llama_memory_seq_rm(slot.context.memory, 1, -1, -1)
                    out.append(Likelihood(total, len(targets)))
            finally:
                slot.lock.release()
        return out

    def _run_group(self, group: list[Job]) -> list[Completion]:
        """Decode a group with at most max_seqs sequences live at once: a sequence that ends hands its place
        (and its cache cells) to the next job, so a few long answers do not leave the step half empty. Which
        job starts when depends only on the group, so the results do too."""
        import llama_cpp

        shared = shared_length(group)
        queue = deque(group)
        done: dict[int, Decoding] = {}
        live: dict[int, Decoding] = {}
        reading: dict[int, int] = {}  # sequence id -> next prompt position to read
        slot = self._acquire_slot(group[0].tokens[:shared])
        started = time.perf_counter()
        try:
            reused = self._prepare(slot, group[0].tokens[:shared])
            while queue or live:
                self._admit(slot, queue, live, reading, shared)
                self._advance(slot, live, reading)
                for seq_id in [k for k, seq in live.items() if seq.finish is not None]:
                    seq = live.pop(seq_id)
                    done[seq.job.index] = seq
                    llama_cpp.llama_memory_seq_rm(slot.context.memory, seq_id, shared if seq_id == 0 else -1, -1)
                    llama_cpp.llama_sampler_free(seq.sampler)
        except Cancelled:  # cut short: not a real completion
            return [Completion("", "error", error="cancelled")] * len(group)
        except RuntimeError as err:
            slot.prefix = []  # its cache may be half written: the next group reads its prefix afresh
            return [Completion("", "error", error=f"RuntimeError: {err}")] * len(group)
        finally:
            slot.lock.release()
            for seq in live.values():
                llama_cpp.llama_sampler_free(seq.sampler)
        seconds = (time.perf_counter() - started) / len(group)
        return [self._completion(done[job.index], reused if k == 0 else shared, seconds) for k, job in enumerate(group)]

    def _admit(
        self, slot: Slot, queue: deque[Job], live: dict[int, Decoding], reading: dict[int, int], shared: int
    ) -> None:
        """Start queued jobs while a sequence id and the cells for the job's whole length are free. Each new
        sequence shares sequence 0's prefix cells."""
        import llama_cpp

        reserved = sum(len(seq.job.tokens) - shared + seq.job.limit for seq in live.values())
        while queue and len(live) < self._max_seqs:
            job = queue[0]
            need = len(job.tokens) - shared + job.limit
            if live and shared + reserved + need > self._cells:
                return
            queue.popleft()
            seq_id = min(set(range(self._max_seqs)) - set(live))
            if seq_id:
                llama_cpp.llama_memory_seq_cp(slot.context.memory, 0, seq_id, 0, shared)
            live[seq_id] = Decoding(job, make_sampler(job.params))
            reading[seq_id] = shared
            reserved += need

    def _advance(self, slot: Slot, live: dict[int, Decoding], reading: dict[int, int]) -> None:
        """One decode call: the newest token of every generating sequence, then as much of the waiting prompts
        as the block holds. A sequence samples its first token once its last prompt token is read."""
        rows = [
            (seq_id, len(seq.job.tokens) + len(seq.made) - 1, seq.made[-1], True)
            for seq_id, seq in live.items()
            if seq_id not in reading
        ]
        generating = len(rows)
        for seq_id in sorted(reading):
            tokens = live[seq_id].job.tokens
            take = min(len(tokens) - reading[seq_id], BLOCK - len(rows))
            if take <= 0:
                break
            rows += [
                (seq_id, pos, tokens[pos], pos == len(tokens) - 1)
                for pos in range(reading[seq_id], reading[seq_id] + take)
            ]
            reading[seq_id] += take
        self._decode(slot, rows)
        for row, (seq_id, _, _, wants) in enumerate(rows):
            if row < generating:
                self._sample(slot, live[seq_id], row)
            elif wants:
                del reading[seq_id]
                self._sample(slot, live[seq_id], row)

    def _completion(self, seq: Decoding, cached: int, seconds: float) -> Completion:
        # the stop string check ran on the text so far; cut again where a stop spans tokens oddly
        body, _ = cut_at_stop(seq.text.decode("utf-8", "ignore"), seq.job.params.stop)
        return Completion(body, seq.finish or "stop", len(seq.job.tokens), len(seq.made), cached, seconds)

    # --- the cache ----------------------------------------------------------------------------------

    def _acquire_slot(self, prefix: list[int]) -> Slot:
        """The slot for a batch, locked. Calls from several threads (the generator's instruction and instance
        stages) decode at the same time on different slots; which slot a batch gets never changes its result."""
        with self._lock:
            slot = self._pick_slot(prefix)
        slot.lock.acquire()
        return slot

    def _prepare(self, slot: Slot, prefix: list[int]) -> int:
        """Cut the slot's cache back to the reusable part of the prefix and read the rest of the prefix into
        sequence 0; returns how many prefix tokens came from the cache."""
        import llama_cpp

        shared = common_prefix(slot.prefix, prefix) if self._reuse_prefix else 0
        reused = min(shared, len(prefix)) // BLOCK * BLOCK
        memory = slot.context.memory
        if reused == 0:
            llama_cpp.llama_memory_clear(memory, False)
        else:
            llama_cpp.llama_memory_seq_rm(memory, -1, reused, -1)
            for seq_id in range(1, self._max_seqs):
                llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        slot.prefix = prefix[:reused]
        for start in range(reused, len(prefix), BLOCK):  # blocks aligned to absolute positions
            self._decode(slot, [(0, pos, prefix[pos], False) for pos in range(start, min(start + BLOCK, len(prefix)))])
        slot.prefix = list(prefix)
        return reused

    def _pick_slot(self, prefix: list[int]) -> Slot:
        """The slot sharing the longest prefix; when none shares a block, a new one while there is room,
        else the least recently used of the idle ones. Used slots move to the end."""
        shared = {id(slot): common_prefix(slot.prefix, prefix) if self._reuse_prefix else 0 for slot in self._slots}
        best = max(self._slots, key=lambda slot: shared[id(slot)], default=None)
        if best is not None and shared[id(best)] >= BLOCK:
            self._slots.remove(best)
        elif len(self._slots) < self._max_slots:
            best = Slot(self._model, self._cells, self._max_seqs, self._lora)
        else:
            best = next((slot for slot in self._slots if not slot.lock.locked()), self._slots[0])
            self._slots.remove(best)
        self._slots.append(best)
        return best

    # --- decoding -----------------------------------------------------------------------------------

    def _decode(self, slot: Slot, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode call of (sequence, position, token, wants logits) rows. A thread working ahead
        of its consumer stops here once it is told to (see backends.cancel_event)."""
        import llama_cpp

        cancel = cancel_event.get()
        if cancel is not None and cancel.is_set():
            raise Cancelled

        threads = self.n_threads or cores.share()
        if threads != slot.threads:
            llama_cpp.llama_set_n_threads(slot.context.ctx, threads, threads)
            slot.threads = threads
        batch = slot.batch.batch
        batch.n_tokens = len(rows)
        for i, (seq_id, pos, token, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq_id
        status = llama_cpp.llama_decode(slot.context.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def _sample(self, slot: Slot, seq: Decoding, row: int) -> None:
        """Sample the sequence's next token from logits row `row` of the last decode, then decide whether
        it ends there: an end-of-generation token, a stop string or its token limit."""
        import llama_cpp

        params = seq.job.params
        if len(seq.made) < params.min_new_tokens:  # end-of-generation is banned until then
            logits = llama_cpp.llama_get_logits_ith(slot.context.ctx, row)
            for token in self._end_ids:
                logits[token] = float("-inf")
        token = llama_cpp.llama_sampler_sample(seq.sampler, slot.context.ctx, row)
        if token in self._end_ids:
            seq.finish = "stop"
            return
        seq.made.append(token)
        seq.text += self._piece(token)
        if params.stop and has_stop(seq):
            seq.finish = "stop"
        elif len(seq.made) >= seq.job.limit:
            seq.finish = "length"

    def _piece(self, token: int, special: bool = False) -> bytes:
        key = -token - 1 if special else token
        if key not in self._pieces:
            import llama_cpp

            buffer = ctypes.create_string_buffer(256)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, special)
            self._pieces[key] = buffer.raw[: max(n, 0)]
        return self._pieces[key]

    def check(self) -> None:
        pass  # the model loaded, or the backend would not exist

    def close(self) -> None:
        with self._lock:
            for slot in self._slots:
                with slot.lock:
                    slot.close()
            self._slots.clear()
            if self._lora is not None:
                import llama_cpp

                llama_cpp.llama_adapter_lora_free(self._lora)
            self._model.close()
