"""Key figures of a run, computed from its directory: the funnel, agreement, wins, tokens and time."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .paths import RunPaths
from .store import read_jsonl

USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "cached_tokens", "seconds", "faults")


def summarize(run_dir: Path) -> dict[str, Any]:
    """Everything the summary table, `stats` and the HTML report show."""
    paths = RunPaths(run_dir)
    rounds = list(read_jsonl(paths.stage("instructions")))
    instances = list(read_jsonl(paths.stage("instances")))
    outputs = list(read_jsonl(paths.stage("outputs")))
    kept = list(read_jsonl(paths.kept))
    rejected = list(read_jsonl(paths.rejected))

    funnel: dict[str, dict[str, int]] = defaultdict(Counter)
    for r in rounds:
        funnel[r["type"]]["instruction_candidates"] += r["candidates"]
        funnel[r["type"]]["instructions_accepted"] += len(r["tasks"])
    for r in instances:  # one instance per record, or several (the self-instruct recipe)
        for inst in r.get("instances", [r["instance"]] if "instance" in r else []):
            funnel[inst["type"]]["instances_valid"] += 1
    reasons: dict[str, Counter] = defaultdict(Counter)
    for r in rejected:
        reasons[r["stage"]][r["reason"]] += 1
        if r["type"]:  # a member's failure belongs to no task type
            funnel[r["type"]][f"rejected_{r['stage']}"] += 1
    wins = Counter(k["provenance"]["selection"]["chosen_model"] for k in kept)
    methods = Counter(k["provenance"]["selection"]["method"] for k in kept)
    for k in kept:
        funnel[k["type"]]["kept"] += 1
    # agreement is a share of the examples that went through consensus (not single-output ones)
    decided = sum(m != "single" for m in methods.elements()) + sum(reasons["ensemble"].values())

    usage: dict[str, dict[str, dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: dict.fromkeys(USAGE_KEYS, 0))
    )
    for stage, records, member_of in (
        ("instructions", rounds, lambda r: r["writer"]),
        ("instances", instances, lambda r: r["member"]),
        ("outputs", outputs, lambda r: r["member"]),
    ):
        for r in records:
            slot = usage[stage][member_of(r)]
            for key in USAGE_KEYS:
                slot[key] += r["usage"].get(key, 0)
    prompt = sum(m["prompt_tokens"] for s in usage.values() for m in s.values())
    cached = sum(m["cached_tokens"] for s in usage.values() for m in s.values())
    return {
        "funnel": {t: dict(c) for t, c in sorted(funnel.items())},
        "rejections": {stage: dict(c.most_common()) for stage, c in reasons.items()},
        "kept": len(kept),
        "decided": decided,
        "agreement_rate": (decided - sum(reasons["ensemble"].values())) / decided if decided else None,
        "selection_methods": dict(methods),
        "win_rate": {m: n / len(kept) for m, n in wins.most_common()} if kept else {},
        "usage": {s: {m: dict(v) for m, v in ms.items()} for s, ms in usage.items()},
        "prompt_tokens": prompt,
        "cached_share": cached / prompt if prompt else 0.0,
        "faults": sum(m["faults"] for s in usage.values() for m in s.values()),
    }
