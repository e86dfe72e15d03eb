"""The pieces the llama.cpp backend decodes with: contexts ("slots") that keep a KV cache, the jobs and
sequences of a call, llama.cpp's samplers, and the machine's cores shared between models."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import GenParams

BLOCK = 64  # prompt tokens per evaluation block, and the most tokens of one decode call
_quiet_callback = None
# llama-cpp-python swaps sys.stdout and sys.stderr while it loads a model; two loads at once in two
# threads would leave them swapped for good, so loads take turns.
loading = threading.Lock()


def silence_llama_log() -> None:
    """llama.cpp logs model loading to stderr even with verbose=False; the progress bars need it quiet."""
    global _quiet_callback
    if _quiet_callback is None:
        import llama_cpp

        _quiet_callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_quiet_callback, ctypes.c_void_p(0))


class _Cores:
    """The machine's cores, shared by the models of this process: a model decoding alone uses them all,
    models decoding at the same time split them (one process per model, one thread each, beats
    oversubscribed threads)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.busy = 0
        self._lock = threading.Lock()

    @contextmanager
    def working(self) -> Iterator[None]:
        with self._lock:
            self.busy += 1
        try:
            yield
        finally:
            with self._lock:
                self.busy -= 1

    def share(self) -> int:
        return max(1, self.total // max(1, self.busy))


cores = _Cores(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class Cancelled(Exception):
    pass


@dataclass
class Job:
    """One prompt of a call: its tokens, its decoding and how many new tokens it may make."""

    index: int
    tokens: list[int]
    params: GenParams
    limit: int

    def key(self) -> tuple:
        p = self.params
        return (
            self.tokens,
            p.temperature,
            p.top_k,
            p.top_p,
            p.max_new_tokens,
            p.min_new_tokens,
            p.stop,
            p.seed,
            p.presence_penalty,
            self.index,
        )


@dataclass
class Decoding:
    """A job being decoded: its sampler, the tokens and bytes it made, and how it ended."""

    job: Job
    sampler: int
    made: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    finish: str | None = None


class Slot:
    """A llama.cpp context with room for several sequences; sequence 0 keeps the KV cache of the last
    batch's shared prefix for the next call."""

    def __init__(self, model, n_ctx: int, n_seqs: int, lora=None) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, BLOCK, BLOCK
        params.n_seq_max, params.kv_unified = n_seqs, True
        # llama.cpp's CPU flash attention decodes a batch of long few-shot prompts 20 % slower here
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.n_threads = params.n_threads_batch = self.threads = 1
        self.context = LlamaContext(model=model, params=params, verbose=False)
        if lora is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(lora)
            llama_cpp.llama_set_adapters_lora(self.context.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        self.batch = LlamaBatch(n_tokens=BLOCK, embd=0, n_seq_max=1, verbose=False)
        self.prefix: list[int] = []  # what sequence 0 holds in cells 0..len-1
        self.lock = threading.Lock()

    def close(self) -> None:
        self.batch.close()
        self.context.close()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def has_stop(seq: Decoding) -> bool:
    """Whether the sequence's text now holds one of its stop strings (checked on its last bytes)."""
    window = max(len(s) for s in seq.job.params.stop) + 64  # bytes: the newest token and a stop string
    tail = bytes(seq.text[-window:]).decode("utf-8", "ignore")
    return any(s and s in tail for s in seq.job.params.stop)


def make_sampler(params: GenParams) -> int:
    """llama.cpp's own sampler chain for one sequence: presence penalty over the completion, then
    greedy, or top-k, top-p and temperature with the sequence's seed."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: int) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if params.presence_penalty:
        # penalties look back over the whole completion; the binding names an extra leading n_vocab
        # argument that llama.cpp's C function no longer has, so the window is passed in both places
        window = max(1, params.max_new_tokens)
        add(llama_cpp.llama_sampler_init_penalties(window, window, 1.0, 0.0, params.presence_penalty))
    if params.temperature <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    add(llama_cpp.llama_sampler_init_temp(params.temperature))
    add(llama_cpp.llama_sampler_init_dist(params.seed & 0xFFFFFFFF))
    return chain


def prefix_groups(jobs: list[Job]) -> Iterator[list[Job]]:
    """Consecutive jobs (in canonical order) that share their prefix block by block: a job that would cut
    the group's shared prefix back by a block starts a group of its own, and so does a job that shares more
    with the job after it than with a lone job before it (else one prompt of another family would pull a
    whole family into a group whose shared prefix is short, and every job would read its own long prompt)."""
    group: list[Job] = []
    blocks = 0
    for k, job in enumerate(jobs):
        if group:
            with_group = common_prefix(group[0].tokens, job.tokens) // BLOCK
            if len(group) > 1:
                bound = blocks
            else:  # a lone job: compare with what this job shares with the one after it
                bound = common_prefix(job.tokens, jobs[k + 1].tokens) // BLOCK if k + 1 < len(jobs) else 0
            if with_group < bound:
                yield group
                group = []
        group.append(job)
        if len(group) == 2:
            blocks = shared_length(group) // BLOCK
    if group:
        yield group


def shared_length(batch: list[Job]) -> int:
    """The prompt prefix all jobs share, leaving each at least one token of its own (for its logits)."""
    first = batch[0].tokens
    shared = min(len(j.tokens) for j in batch) - 1
    for job in batch[1:]:
        shared = min(shared, common_prefix(first, job.tokens))
    return shared
