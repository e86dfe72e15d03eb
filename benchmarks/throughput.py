"""Generation throughput of a full run on the embedded default ensemble, side by side with (1) the engine's own
decode speed for the same models and (2) a sequential, uncached implementation of the same steps.

    python benchmarks/throughput.py [-n 50] [--out runs/throughput]

(1) Each model greedily decodes 256 tokens after a short prompt through llama-cpp-python, one thread, as the run's
members do: that rate is the engine's bound. "Engine time" is the time those rates need to decode exactly the
tokens the run generated, one model after another; the run's efficiency is engine time / wall time (prompt reading,
parsing, Rouge-L and I/O all count against it; parallel members can lift it above 100 %).
(2) The baseline makes the same data set with every prompt read from its first token (no prefix cache), the
extra members answering one after another, and the generator drafting a round only once the previous one is
decided (no producer thread). Both runs must give identical data.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from ensemble_instruct.backends import GenParams
from ensemble_instruct.backends.llamacpp import LlamaCppBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.models import resolve_model
from ensemble_instruct.pipeline import Pipeline
from ensemble_instruct.seeds import load_demos, load_seeds
from ensemble_instruct.stats import summarize
from ensemble_instruct.store import RunStore, read_jsonl

PROBE = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


class SequentialPipeline(Pipeline):
    parallel_extras = False


def open_backends(cfg, reuse_prefix: bool) -> dict[str, LlamaCppBackend]:
    out = {}
    for m in cfg.members:
        path, info = resolve_model(m.model)
        out[m.name] = LlamaCppBackend(m.name, path, (m.kind or info.kind) == "instruct", m.n_ctx, m.n_threads,
                                      reuse_prefix=reuse_prefix)
    return out


def decode_rate(backend: LlamaCppBackend) -> float:
    """Best of three: generated tokens per second with a prompt too short to matter."""
    rates = []
    for k in range(3):
        done = backend.generate([PROBE], GenParams(max_new_tokens=256, min_new_tokens=256, seed=k))[0]
        rates.append(done.completion_tokens / done.seconds)
    return max(rates)


def timed_run(cfg, out: Path, reuse_prefix: bool, pipeline_class: type[Pipeline]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    backends = open_backends(cfg, reuse_prefix)
    try:
        store = RunStore(out, cfg)
        started = time.perf_counter()
        pipeline_class(cfg, store, backends, load_seeds(cfg.seeds), load_demos()).run()
        seconds = time.perf_counter() - started
        store.close()
        return seconds
    finally:
        for b in backends.values():
            b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="kept examples per type")
    parser.add_argument("--out", type=Path, default=Path("runs/throughput"))
    args = parser.parse_args()
    cfg = build_config({"type_a": {"target": args.n}, "type_b": {"target": args.n}, "exports": ["jsonl"]})

    backends = open_backends(cfg, True)
    rates = {name: decode_rate(b) for name, b in backends.items()}
    for b in backends.values():
        b.close()

    ours = timed_run(cfg, args.out / "ours", True, Pipeline)
    baseline = timed_run(cfg, args.out / "baseline", False, SequentialPipeline)
    same = list(read_jsonl(args.out / "ours" / "data.jsonl")) == list(read_jsonl(args.out / "baseline" / "data.jsonl"))

    summary = summarize(args.out / "ours")
    generated = {name: 0 for name in rates}
    for members in summary["usage"].values():
        for name, usage in members.items():
            generated[name] += usage["completion_tokens"]
    engine_s = sum(generated[name] / rates[name] for name in rates)
    total = sum(generated.values())

    print(f"kept examples: {summary['kept']}; identical data in both runs: {'yes' if same else 'NO'}")
    print(f"{'member':>20} {'engine tok/s':>12} {'tokens generated':>16} {'engine s':>9}")
    for name, rate in rates.items():
        print(f"{name:>20} {rate:>12.1f} {generated[name]:>16} {generated[name] / rate:>9.1f}")
    print(f"engine time for the run's tokens: {engine_s:.0f} s ({total / engine_s:.1f} tok/s)")
    print(f"this pipeline: {ours:.0f} s ({total / ours:.1f} tok/s), {engine_s / ours:.0%} of the engine's bound; "
          f"prompt tokens from cache {summary['cached_share']:.0%}")
    print(f"sequential, uncached baseline: {baseline:.0f} s; ratio {baseline / ours:.2f}x")


if __name__ == "__main__":
    main()
