"""Which member should write instructions and instances? Small runs of the default ensemble, side by side.

    python benchmarks/roles.py [-n 10] [--out runs/roles]

Each assignment makes N kept examples per type from the default seeds with the same seed; the table shows the
kept examples, the keep rate of each stage, the agreement rate and the wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ensemble_instruct.config import build_config
from ensemble_instruct.run import run_generation

MODELS = {"qwen": "qwen2.5-coder-0.5b-instruct", "smollm2": "smollm2-135m-instruct", "gemma": "gemma-3-270m"}

# (instruction writer, instance writer); every member gives extra outputs on instances it did not write
ASSIGNMENTS = [("gemma", "qwen"), ("qwen", "qwen"), ("gemma", "gemma"), ("smollm2", "qwen")]


def members(instructions: str, instances: str) -> list[dict]:
    out = []
    for name, model in MODELS.items():
        roles = [r for r, who in (("instructions", instructions), ("instances", instances)) if who == name]
        out.append({"name": name, "model": model, "roles": roles + ["outputs"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="kept examples per type")
    parser.add_argument("--out", type=Path, default=Path("runs/roles"))
    args = parser.parse_args()
    rows = []
    for instr, inst in ASSIGNMENTS:
        cfg = build_config({"members": members(instr, inst), "type_a": {"target": args.n},
                            "type_b": {"target": args.n}, "exports": ["jsonl"]})
        started = time.perf_counter()
        summary = run_generation(cfg, args.out / f"{instr}-{inst}")
        seconds = time.perf_counter() - started
        f = {k: sum(t.get(k, 0) for t in summary["funnel"].values()) for k in
             ("instruction_candidates", "instructions_accepted", "instances_valid", "kept")}
        rows.append((instr, inst, f, summary["agreement_rate"] or 0.0, seconds))
    print(f"{'instructions':>12} {'instances':>9} {'kept':>5} {'instr keep':>10} {'inst valid':>10} "
          f"{'agreement':>9} {'seconds':>8} {'s/kept':>7}")
    for instr, inst, f, agree, seconds in rows:
        print(f"{instr:>12} {inst:>9} {f['kept']:>5} "
              f"{f['instructions_accepted'] / max(f['instruction_candidates'], 1):>10.0%} "
              f"{f['instances_valid'] / max(f['instructions_accepted'], 1):>10.0%} {agree:>9.0%} "
              f"{seconds:>8.0f} {seconds / max(f['kept'], 1):>7.1f}")


if __name__ == "__main__":
    main()
