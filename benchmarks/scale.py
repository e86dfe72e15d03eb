"""Scale-out to server replicas: kept examples per minute, requests in flight and the client's CPU, with every
member over HTTP to a separate server process that answers after an injected latency (latency_server.py).

    python benchmarks/scale.py [--latency 0.5 2] [--replicas 1 8 64] [--lag 1 16] [--seconds 40]

Every example is kept (the server's answers agree), so kept/min is an upper bound set by the schedule alone.
Each setting runs for about `seconds` (its target is sized from a short first estimate) at the default
batch_size, with max_concurrency 16 per replica. "in flight" is counted at the server: the most requests it
held at once and their time mean. "client CPU" is the CPU time of this process (the whole pipeline: HTTP,
parsing, the novelty filter, the vote, the store) per second of wall time. The last column is kept/min
relative to one replica at the same latency and lag.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ensemble_instruct.config import build_config
from ensemble_instruct.run import run_generation

SERVER = Path(__file__).with_name("latency_server.py")
BASE_PORT = 23000


def start_server(replicas: int, latency: float, jitter: float) -> tuple[subprocess.Popen, list[str]]:
    ports = f"{BASE_PORT}-{BASE_PORT + replicas - 1}"
    args = [sys.executable, str(SERVER), "--ports", ports, "--latency", str(latency), "--jitter", str(jitter)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the latency server did not start")
    return proc, [f"http://127.0.0.1:{BASE_PORT + i}" for i in range(replicas)]


def config(urls: list[str], target: int, lag: int, concurrency: int):
    http = {"backend": "http", "model": "m", "base_urls": urls, "max_concurrency": concurrency, "timeout_s": 60}
    members = [
        {**http, "name": "gen", "kind": "base", "roles": ["instructions", "instances"]},
        {**http, "name": "chat", "kind": "instruct", "roles": ["outputs"]},
        {**http, "name": "base", "kind": "base", "roles": ["outputs"]},
    ]
    return build_config(
        {"members": members, "type_a": {"target": target}, "type_b": {"target": target},
         "instructions": {"lag": lag}, "exports": ["jsonl"]}
    )  # fmt: skip


def timed(urls: list[str], target: int, lag: int, concurrency: int) -> dict[str, float]:
    stats_url = urls[0] + "/v1/stats"
    with tempfile.TemporaryDirectory() as out:
        httpx.get(stats_url)  # a new count starts
        cpu, wall = time.process_time(), time.perf_counter()
        summary = run_generation(config(urls, target, lag, concurrency), Path(out))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        served = httpx.get(stats_url).json()
    return {
        "kept": summary["kept"],
        "kept_per_min": summary["kept"] / wall * 60,
        "peak": served["peak_in_flight"],
        "mean": served["mean_in_flight"],
        "cpu": cpu / wall,
        "wall": wall,
        "unused": summary["this_run"]["unused"] / max(1, summary["this_run"]["used"] + summary["this_run"]["unused"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.5, 2.0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--lag", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--jitter", type=float, default=0.25, help="a share of the latency, added at random")
    parser.add_argument("--concurrency", type=int, default=16, help="max_concurrency per replica")
    parser.add_argument("--seconds", type=float, default=40.0, help="about how long each setting runs")
    args = parser.parse_args()
    header = "latency s | replicas | lag | kept | kept/min | in flight max / mean | client CPU | unused | vs 1 replica"
    print(f"| {header} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for latency in args.latency:
        for lag in args.lag:
            first = None
            for replicas in args.replicas:
                proc, urls = start_server(replicas, latency, latency * args.jitter)
                try:
                    probe = timed(urls, 10 * lag, lag, args.concurrency)  # sizes the target: `seconds` of work
                    target = max(10, int(probe["kept_per_min"] * args.seconds / 60 / 2))
                    r = timed(urls, target, lag, args.concurrency)
                finally:
                    proc.terminate()
                    proc.wait()
                first = first or r["kept_per_min"]
                print(
                    f"| {latency} | {replicas} | {lag} | {r['kept']} | {r['kept_per_min']:,.0f} | "
                    f"{r['peak']} / {r['mean']:.0f} | {r['cpu']:.2f} | {r['unused']:.1%} | "
                    f"{r['kept_per_min'] / first:.1f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
