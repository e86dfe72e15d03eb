"""Many rounds in flight: the lag between rounds, the same data whatever the timing (over a real HTTP server that
answers out of order, at 1 and 8 replicas, across SIGKILLs), and no model work for a run that is done."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from rich.console import Console

from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import SERVED_LAG, build_config, load_config
from ensemble_instruct.run import run_generation
from ensemble_instruct.store import read_jsonl
from faultproxy import FaultProxy, seeded
from servers import free_port
from test_faults import RATES, SEEN_AS
from test_memory import writer
from test_pipeline import agreeing, disagreeing

SERVER = Path(__file__).resolve().parents[1] / "benchmarks" / "latency_server.py"


def scripted_config(lag: int, target: int = 30):
    members = [{"name": "gen", "backend": "scripted", "model": "s", "roles": ["instructions", "instances"]},
               {"name": "ok", "backend": "scripted", "model": "s", "roles": ["outputs"]},
               {"name": "ok2", "backend": "scripted", "model": "s", "roles": ["outputs"]}]  # fmt: skip
    return build_config({"members": members, "type_a": {"target": target}, "type_b": {"target": target},
                         "instructions": {"lag": lag, "batch_size": 2}, "consensus": {"hygiene": False}})  # fmt: skip


def scripted_crew() -> dict[str, ScriptedBackend]:
    return {"gen": ScriptedBackend([writer], "gen"), "ok": ScriptedBackend([agreeing], "ok"),
            "ok2": ScriptedBackend([sometimes_agreeing], "ok2")}  # fmt: skip


def sometimes_agreeing(prompt, params):
    """Agrees on about two instances in three, so rounds keep unevenly and the drafting estimate is only that."""
    return disagreeing(prompt, params) if zlib.crc32(str(prompt).encode()) % 3 == 0 else agreeing(prompt, params)


def test_a_round_draws_its_synthetic_demos_only_from_rounds_lag_back(tmp_path):
    lag = 3
    run_generation(scripted_config(lag), tmp_path, backends=scripted_crew())
    rounds = list(read_jsonl(tmp_path / "stages" / "instructions.jsonl"))
    round_of = {task["id"]: (r["type"], r["round"]) for r in rounds for task in r["tasks"]}
    drew_synthetic = 0
    for r in rounds:
        for demo in r["demo_ids"]:
            if demo in round_of:  # a synthetic demo, not a seed
                assert round_of[demo][0] == r["type"] and round_of[demo][1] <= r["round"] - lag, (r["round"], demo)
                drew_synthetic += 1
    assert drew_synthetic > 10  # rounds from the fourth on drew synthetic demos: the check above was exercised


def test_the_lag_is_1_for_local_writers_and_more_for_served_ones():
    assert build_config({}).instructions.lag == 1
    served = build_config({"members": http_config(["http://127.0.0.1:1"], 4)["members"]})
    assert served.instructions.lag == SERVED_LAG > 1
    extra_served = load_config(None, {"members.1.backend": "http", "members.1.base_urls": ["127.0.0.1:1"]})
    assert extra_served.instructions.lag == 1  # only a served writer of instructions gains from a larger lag
    assert build_config({"instructions": {"lag": 3}}).instructions.lag == 3


def test_lag_changes_the_data_and_its_hash_but_lag_1_keeps_the_hash_of_before():
    one, two = build_config({"instructions": {"lag": 1}}), build_config({"instructions": {"lag": 2}})
    assert one.content_hash() == build_config({}).content_hash() != two.content_hash()
    hashed = one.model_dump(mode="json")["instructions"]
    assert "lag" in hashed  # in the configuration; left out of the hash only at 1, the data made before it existed


@pytest.mark.parametrize("lag", [1, 3])
def test_a_finished_run_started_again_asks_the_models_nothing(tmp_path, lag):
    run_generation(scripted_config(lag, target=40), tmp_path, backends=scripted_crew())
    again = scripted_crew()
    summary = run_generation(scripted_config(lag, target=40), tmp_path, backends=again)
    assert [len(b.prompts) for b in again.values()] == [0, 0, 0]
    assert summary["this_run"]["used"] == summary["this_run"]["unused"] == 0
    assert summary["kept"] == 80


def test_rounds_drafted_ahead_and_not_needed_are_counted_as_unused(tmp_path):
    summary = run_generation(scripted_config(lag=4, target=20), tmp_path, backends=scripted_crew())
    made = summary["this_run"]
    assert made["used"] > 0 and made["peak_in_flight"] >= 2
    assert made["unused"] >= 0 and made["unused_rounds"] >= 0
    assert made["unused"] <= 0.25 * (made["used"] + made["unused"])  # the estimate stops drafting near the end


def test_the_summary_says_what_this_run_made_and_how_long_it_took(tmp_path, monkeypatch):
    from ensemble_instruct import cli

    summary = run_generation(scripted_config(lag=2, target=10), tmp_path, backends=scripted_crew())
    assert 0 < summary["this_run"]["seconds"] < 300
    screen = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=screen, width=300))
    summary["this_run"]["seconds"] = 90.0
    cli.print_summary(summary, tmp_path)
    made = summary["this_run"]["used"] + summary["this_run"]["unused"]
    assert f"this run: {made} tokens generated in 1.5 min" in screen.getvalue()
    assert f"kept {summary['kept']} examples" in screen.getvalue()


# --- over HTTP, with answers coming back out of order ---------------------------------------------------------


@contextmanager
def latency_server(replicas: int, latency: float, jitter: float) -> Iterator[list[str]]:
    """The benchmark's server in its own process: answers that agree, after latency + random jitter."""
    ports: list[int] = []
    while len(ports) < replicas:  # a port handed out and released may be handed out again at once
        if (port := free_port()) not in ports:
            ports.append(port)
    args = [sys.executable, str(SERVER), "--ports", ",".join(map(str, ports)),
            "--latency", str(latency), "--jitter", str(jitter)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        proc.terminate()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def http_config(urls: list[str], concurrency: int) -> dict:
    http = {"backend": "http", "model": "m", "base_urls": urls, "max_concurrency": concurrency, "timeout_s": 30}
    members = [{**http, "name": "gen", "kind": "base", "roles": ["instructions", "instances"]},
               {**http, "name": "chat", "kind": "instruct", "roles": ["outputs"]},
               {**http, "name": "base", "kind": "base", "roles": ["outputs"]}]  # fmt: skip
    return {"members": members, "type_a": {"target": 80}, "type_b": {"target": 80},
            "instructions": {"lag": 8}, "exports": ["jsonl"]}  # fmt: skip


def same_data(run: Path, reference: Path) -> bool:
    """Byte for byte the same kept examples and drops (the drops file exists only once something was dropped)."""
    return all(
        (run / name).exists() == (reference / name).exists()
        and (not (run / name).exists() or (run / name).read_bytes() == (reference / name).read_bytes())
        for name in ("data.jsonl", "rejected.jsonl")
    )


def peak_in_flight(url: str) -> int:
    return httpx.get(url + "/v1/stats").json()["peak_in_flight"]


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory) -> Path:
    """The reference: one replica answering one request at a time, in order."""
    out = tmp_path_factory.mktemp("serial")
    with latency_server(1, 0.0, 0.0) as urls:
        run_generation(build_config(http_config(urls, 1)), out)
        assert peak_in_flight(urls[0]) <= 3  # one per member
    return out


def test_eight_replicas_with_jitter_make_the_same_data_as_one_request_at_a_time(one_at_a_time, tmp_path):
    with latency_server(8, 0.2, 0.3) as urls:
        httpx.get(urls[0] + "/v1/stats")
        cfg = build_config(http_config(urls, 16))
        screen = io.StringIO()
        summary = run_generation(cfg, tmp_path, console=Console(file=screen, width=250))
        peak = peak_in_flight(urls[0])
    bars = [line for line in screen.getvalue().splitlines() if line.startswith("kept ")]
    assert len(bars) == 2 and all("kept/min · in flight" in line for line in bars), bars
    assert peak >= 128, peak  # answers really were in flight together, and came back out of order
    assert same_data(tmp_path, one_at_a_time)
    assert summary["kept"] == 160 and summary["this_run"]["peak_in_flight"] >= 128


@pytest.mark.slow
def test_sigkills_with_many_requests_in_flight_lose_and_change_nothing(one_at_a_time, tmp_path):
    rng = random.Random(7)
    with latency_server(8, 0.2, 0.3) as urls:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(http_config(urls, 16)))
        out = tmp_path / "run"
        cmd = [sys.executable, "-m", "ensemble_instruct", "generate", "--config", str(config), "--out", str(out),
               "--quiet"]  # fmt: skip
        kills = 0
        for _ in range(4):
            kept = out / "data.jsonl"
            before = kept.stat().st_size if kept.exists() else 0
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while proc.poll() is None and (kept.stat().st_size if kept.exists() else 0) <= before:
                assert time.monotonic() < deadline
                time.sleep(0.02)  # each kill lands once the run keeps examples again, in full flow
            time.sleep(rng.uniform(0, 1.0))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
        killed_while_busy = peak_in_flight(urls[0])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert kills >= 2 and killed_while_busy >= 128
    assert same_data(out, one_at_a_time)


def test_faults_with_many_requests_in_flight_change_no_answer(one_at_a_time, tmp_path):
    """Every member over HTTP through the fault-injecting proxy, 128 requests and more in flight: every fault
    is retried and counted, and the data is byte for byte the data of one request at a time."""
    quick = {k: rate for k, rate in RATES.items() if SEEN_AS[k] != "timeout"}  # a stall costs a whole timeout
    with (
        latency_server(1, 0.2, 0.3) as urls,
        FaultProxy(urls[0], seeded(quick, seed=11, max_faults=2), client_timeout_s=30) as proxy,
    ):
        cfg = http_config([proxy.url], 128)
        for member in cfg["members"]:
            member["max_retries"] = 3
        summary = run_generation(build_config(cfg), tmp_path)
        injected = sum(proxy.injected.values())
    assert injected >= 50 and summary["faults"] == injected
    # asked for and not answered: the proxy, in this process, lets them through to the server more slowly
    assert summary["this_run"]["peak_in_flight"] >= 128, summary["this_run"]
    assert same_data(tmp_path, one_at_a_time)
