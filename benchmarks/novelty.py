"""Benchmark: Rouge-L novelty filtering with NoveltyIndex vs the straightforward rouge_score loop.

A deterministic stream of instructions (the Self-Instruct seed tasks and the user-oriented instructions,
plus perturbed variants and recombinations) is fed to ``NoveltyIndex.query_and_add_many`` until the pool
holds ``--n`` instructions. The reference, as in Self-Instruct, calls ``RougeScorer.score`` against every
pooled instruction (single process, no stemming); it is run only for a sample of candidates near a few
pool sizes, on exactly the pool each candidate saw, and its full-stream cost is extrapolated.

    python benchmarks/novelty.py                 # pool up to 20,000
    python benchmarks/novelty.py --quick         # small smoke run
    python benchmarks/novelty.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from pathlib import Path

from rouge_score import rouge_scorer

from ensemble_instruct.rouge import NoveltyIndex

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = ("self_instruct_seed_tasks.jsonl", "user_oriented_instructions.jsonl")
CHECKPOINTS = (1_000, 2_000, 5_000, 10_000, 20_000)
THRESHOLD = 0.7


def load_instructions(data: Path) -> list[str]:
    """The ``instruction`` field of every record in the shared seed and user-oriented sets."""
    out = []
    for name in FILES:
        with open(data / name, encoding="utf-8") as f:
            out += [json.loads(line)["instruction"] for line in f if line.strip()]
    return out


def instruction_stream(bases: list[str], seed: int = 0):
    """Endless deterministic stream: near-duplicates of earlier items and edited recombinations."""
    rng = random.Random(seed)
    docs = [b.split() for b in bases]
    vocab = sorted({w.strip(string.punctuation).lower() for d in docs for w in d} - {""})
    history: list[list[str]] = []

    def edit(words: list[str], n_ops: int) -> list[str]:
        words = list(words)
        for _ in range(n_ops):
            op = rng.random()
            i = rng.randrange(len(words)) if words else 0
            if op < 0.25 and len(words) > 1:  # swap neighbours
                j = min(i + 1, len(words) - 1)
                words[i], words[j] = words[j], words[i]
            elif op < 0.45 and len(words) > 3:  # drop
                del words[i]
            elif op < 0.7:  # insert
                words.insert(i, rng.choice(vocab))
            elif words:  # substitute
                words[i] = rng.choice(vocab)
        return words

    while True:
        r = rng.random()
        if r < 0.08:  # a seed asked again, lightly edited
            words = edit(rng.choice(docs), rng.randint(0, 2))
        elif r < 0.18 and history:  # a recent generation repeated with small edits
            words = edit(rng.choice(history[-2000:]), rng.randint(1, 3))
        else:  # recombine fragments of two or three seeds, then edit heavily
            words = []
            for d in rng.sample(docs, rng.randint(2, 3)):
                a = rng.randrange(len(d))
                words += d[a: a + rng.randint(3, 12)]
            words = edit(words, max(2, len(words) // 3))
        history.append(words)
        yield " ".join(words)


def reference_max(scorer: rouge_scorer.RougeScorer, candidate: str, pool: list[str]):
    """Self-Instruct's loop: score the candidate against every pooled instruction."""
    scores = [scorer.score(candidate, p)["rougeL"].fmeasure for p in pool]
    best = max(scores, default=0.0)
    return best, (pool[scores.index(best)] if best > 0 else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the shared JSONL files")
    ap.add_argument("--n", type=int, default=20_000, help="final pool size")
    ap.add_argument("--samples", type=int, default=30, help="reference candidates per sampled pool size")
    ap.add_argument("--quick", action="store_true", help="small smoke run (pool 2,000, 5 samples)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    n, samples = (min(args.n, 2_000), min(args.samples, 5)) if args.quick else (args.n, args.samples)

    bases = load_instructions(args.data)
    checkpoints = [c for c in CHECKPOINTS if c < n] + [n]
    windows = [w for w in (1_000, 5_000, 10_000) if w < n] or [n // 2]

    index = NoveltyIndex(threshold=THRESHOLD, stem=False)
    pool: list[str] = []
    sampled = []  # (window, candidate, pool size seen, our result, our seconds)
    rows, seen, rejected, total, pairs = [], 0, 0, 0.0, 0
    last = {"pool": 0, "seen": 0, "time": 0.0}
    for text in instruction_stream(bases):
        if len(pool) >= n:
            break
        size = len(pool)
        t0 = time.perf_counter()
        (result,) = index.query_and_add_many([text])
        dt = time.perf_counter() - t0
        total += dt
        seen += 1
        pairs += size
        if result.is_novel:
            pool.append(text)
        else:
            rejected += 1
        for w in windows:
            if size >= w and sum(s[0] == w for s in sampled) < samples:
                sampled.append((w, text, size, result, dt))
                break
        if len(pool) in checkpoints and len(pool) > last["pool"]:
            cands = seen - last["seen"]
            rows.append({"pool": len(pool), "candidates": seen, "rejected": rejected,
                         "cumulative_s": total,
                         "window_us_per_candidate": 1e6 * (total - last["time"]) / cands})
            last = {"pool": len(pool), "seen": seen, "time": total}

    print(f"stream: {len(bases)} shared instructions + perturbed variants; threshold {THRESHOLD}, "
          f"no stemming")
    print(f"NoveltyIndex.query_and_add_many: {seen} candidates, {rejected} rejected "
          f"({100 * rejected / max(seen, 1):.1f}%), pool {len(pool)}, total {total:.2f} s\n")
    print(f"{'pool size':>10} {'candidates':>11} {'rejected':>9} {'cumulative s':>13} {'us/candidate':>13}")
    for r in rows:
        print(f"{r['pool']:>10,} {r['candidates']:>11,} {r['rejected']:>9,} {r['cumulative_s']:>13.2f} "
              f"{r['window_us_per_candidate']:>13.0f}")

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    ref_rows, agree, checked = [], 0, 0
    for w in windows:
        group = [s for s in sampled if s[0] == w]
        if not group:
            continue
        ref_time, ours_time, ok = 0.0, 0.0, 0
        for _, text, size, ours, dt in group:
            t0 = time.perf_counter()
            best, nearest = reference_max(scorer, text, pool[:size])
            ref_time += time.perf_counter() - t0
            ours_time += dt
            ok += ((best <= THRESHOLD) == ours.is_novel and best == ours.max_score
                   and nearest == ours.nearest)
        m = len(group)
        ref_rows.append({"pool": w, "mean_pool_seen": sum(s[2] for s in group) / m, "samples": m,
                         "agree": ok, "reference_ms_per_candidate": 1e3 * ref_time / m,
                         "ours_ms_per_candidate": 1e3 * ours_time / m, "speedup": ref_time / ours_time})
        agree += ok
        checked += m

    print("\nreference (RougeScorer.score against every pooled instruction) on sampled candidates, "
          "same pool state:")
    print(f"{'pool size':>10} {'samples':>8} {'agree':>6} {'reference ms':>13} {'ours ms':>9} {'speedup':>9}")
    for r in ref_rows:
        print(f"{round(r['mean_pool_seen']):>10,} {r['samples']:>8} {r['agree']:>6} "
              f"{r['reference_ms_per_candidate']:>13.1f} {r['ours_ms_per_candidate']:>9.3f} "
              f"{r['speedup']:>8.0f}x")
    print(f"\nagreement (decision, max score float-equal, nearest): {agree}/{checked}")

    at = next((r for r in ref_rows if r["pool"] == 10_000), ref_rows[-1])
    ref_per_pair = at["reference_ms_per_candidate"] / 1e3 / at["mean_pool_seen"]
    simple = at["reference_ms_per_candidate"] / 1e3 * seen
    linear = ref_per_pair * pairs  # every (candidate, pooled instruction) pair of the stream
    print(f"ratio at pool ~{at['pool']:,}: reference {at['reference_ms_per_candidate']:.1f} ms vs ours "
          f"{at['ours_ms_per_candidate']:.3f} ms per candidate = {at['speedup']:.0f}x")
    print(f"extrapolated full reference run: {simple / 3600:.2f} h (= reference per-candidate cost at pool "
          f"~{at['pool']:,} x {seen:,} candidates); ~{linear / 3600:.2f} h if cost grows linearly with pool "
          f"size; ours {total:.1f} s")

    if args.json:
        args.json.write_text(json.dumps({
            "n": n, "threshold": THRESHOLD, "candidates": seen, "rejected": rejected,
            "pool": len(pool), "total_s": total, "checkpoints": rows, "reference": ref_rows,
            "agreement": {"agree": agree, "checked": checked},
            "ratio_pool": at["pool"], "ratio": at["speedup"],
            "reference_extrapolated_h": {"per_candidate_x_candidates": simple / 3600,
                                         "linear_in_pool": linear / 3600},
        }, indent=2) + "\n", encoding="utf-8")
    return 0 if agree == checked else 1


if __name__ == "__main__":
    sys.exit(main())
