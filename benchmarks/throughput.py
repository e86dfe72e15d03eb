"""Generation throughput of a full run on the embedded default ensemble, side by side with (1) the engine's own
decode speed for the same models and (2) a sequential, uncached implementation of the same steps.

    python benchmarks/throughput.py [-n 50] [--out runs/throughput]

(1) The engine's bounds: each model, loaded through llama-cpp-python's own `Llama` class with every core, greedily
decodes 256 tokens after a short prompt, one sequence at a time (best of three); and, through this project's
llama.cpp backend with every core, 16 sequences of 128 tokens together (best of two). "Engine time" is the time
those rates need to decode exactly the tokens the run generated, one model after another; the run's share of a
bound is engine time / wall time. Prompt reading, parsing, Rouge-L and I/O all count against the run; several
sequences per decode step and members working side by side can lift it above the single-sequence bound.
(2) The baseline runs the same pipeline code with one prompt decoded at a time, every prompt read from its first
token (no prefix cache), the extra members answering one after another and each stage waiting for the one
before (no producer threads). Its data set is a second sample of the same steps, not a copy of the first: a
batch of sequences rounds its sums in another order than a single sequence, which can flip a sampled token.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from ensemble_instruct.backends import GenParams
from ensemble_instruct.backends.llamacpp import LlamaCppBackend
from ensemble_instruct.backends.llamacpp_context import silence_llama_log
from ensemble_instruct.config import build_config
from ensemble_instruct.context import RunContext
from ensemble_instruct.models import member_kind, resolve_model
from ensemble_instruct.pipeline import EnsembleInstruct
from ensemble_instruct.seeds import load_demos, load_seeds
from ensemble_instruct.stats import summarize
from ensemble_instruct.store import RunStore, read_jsonl

PROBE = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
CORES = len(os.sched_getaffinity(0))


def engine_rate(path: Path) -> float:
    """Best of three: generated tokens per second of llama-cpp-python's own completion loop."""
    from llama_cpp import Llama

    silence_llama_log()
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=CORES, n_threads_batch=CORES, verbose=False)
    try:
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            out = llm.create_completion(PROBE, max_tokens=256, temperature=0.0)
            rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - started))
            llm.reset()
        return max(rates)
    finally:
        llm.close()


def batched_rate(path: Path, instruction_tuned: bool, seqs: int = 16) -> float:
    """Generated tokens per second when the engine decodes `seqs` sequences together (through this project's
    llama.cpp backend, every core), 128 tokens each after the same short prompt; best of two."""
    backend = LlamaCppBackend("probe", path, instruction_tuned, n_ctx=4096, n_threads=CORES, max_seqs=seqs)
    params = GenParams(max_new_tokens=128, min_new_tokens=128)
    try:
        backend.generate([PROBE], params)  # the prompt is read once, then cached
        rates = []
        for attempt in range(2):
            started = time.perf_counter()
            done = backend.generate([PROBE] * seqs, [params.with_seed(attempt * seqs + i) for i in range(seqs)])
            rates.append(sum(c.completion_tokens for c in done) / (time.perf_counter() - started))
        return max(rates)
    finally:
        backend.close()


def open_backends(cfg, baseline: bool) -> dict[str, LlamaCppBackend]:
    out = {}
    for m in cfg.members:
        path, _ = resolve_model(m.model)
        out[m.name] = LlamaCppBackend(m.name, path, member_kind(m) == "instruct", m.n_ctx, m.n_threads,
                                      reuse_prefix=not baseline, max_seqs=1 if baseline else 16)
    return out


def timed_run(cfg, out: Path, baseline: bool) -> tuple[float, float]:
    """Seconds the run took, and the share of its generated tokens in rounds drafted and not needed."""
    shutil.rmtree(out, ignore_errors=True)
    backends = open_backends(cfg, baseline)
    try:
        store = RunStore(out, cfg)
        started = time.perf_counter()
        ctx = RunContext(cfg, store, backends, load_seeds(cfg.seeds), load_demos())
        made = EnsembleInstruct(ctx, parallel=not baseline).run()
        seconds = time.perf_counter() - started
        store.close()
        return seconds, made["unused"] / max(1, made["used"] + made["unused"])
    finally:
        for b in backends.values():
            b.close()


def generated_tokens(run_dir: Path) -> dict[str, int]:
    tokens: dict[str, int] = {}
    for members in summarize(run_dir)["usage"].values():
        for name, usage in members.items():
            tokens[name] = tokens.get(name, 0) + usage["completion_tokens"]
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="kept examples per type")
    parser.add_argument("--out", type=Path, default=Path("runs/throughput"))
    parser.add_argument("--no-baseline", action="store_true", help="time this pipeline alone")
    args = parser.parse_args()
    arms = ("ours",) if args.no_baseline else ("ours", "baseline")
    cfg = build_config({"type_a": {"target": args.n}, "type_b": {"target": args.n}, "exports": ["jsonl"]})

    rates = {m.name: engine_rate(resolve_model(m.model)[0]) for m in cfg.members}
    batched = {m.name: batched_rate(resolve_model(m.model)[0], member_kind(m) == "instruct") for m in cfg.members}
    timed = {arm: timed_run(cfg, args.out / arm, arm == "baseline") for arm in arms}
    seconds = {arm: s for arm, (s, _) in timed.items()}

    print(f"{CORES} cores; the engine decodes one sequence at a time, or 16 together, with all of them")
    print(f"{'member':>20} {'1-seq tok/s':>11} {'16-seq tok/s':>12} {'our tokens':>10} {'1-seq s':>8} {'16-seq s':>8}")
    tokens = generated_tokens(args.out / "ours")
    for name, rate in rates.items():
        made = tokens.get(name, 0)
        print(f"{name:>20} {rate:>11.1f} {batched[name]:>12.1f} {made:>10} {made / rate:>8.1f} "
              f"{made / batched[name]:>8.1f}")
    for arm in arms:
        summary, made = summarize(args.out / arm), generated_tokens(args.out / arm)
        single = sum(made.get(name, 0) / rate for name, rate in rates.items())
        sixteen = sum(made.get(name, 0) / rate for name, rate in batched.items())
        total = sum(made.values())
        print(f"{arm:>9}: {summary['kept']} kept in {seconds[arm]:.0f} s; {total} tokens generated, "
              f"{total / seconds[arm]:.1f} tok/s = {single / seconds[arm]:.0%} of the single-sequence bound "
              f"({single:.0f} s), {sixteen / seconds[arm]:.0%} of the 16-sequence bound ({sixteen:.0f} s); "
              f"prompt tokens from cache {summary['cached_share']:.0%}; drafted and not needed {timed[arm][1]:.1%}")
    if args.no_baseline:
        return
    same = list(read_jsonl(args.out / "ours" / "data.jsonl")) == list(read_jsonl(args.out / "baseline" / "data.jsonl"))
    print(f"end to end: the baseline took {seconds['baseline'] / seconds['ours']:.2f}x as long; "
          f"identical data sets: {'yes' if same else 'no (see the docstring)'}")


if __name__ == "__main__":
    main()
