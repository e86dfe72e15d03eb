"""The HTTP backend against faulty servers: a fault-injecting proxy (faultproxy.py) stands in front of a real
llama.cpp server serving SmolLM2-135M-Instruct. Whatever the proxy injects, greedy answers through it must
equal the answers the server gives directly, prompt by prompt, and every fault must be counted."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from ensemble_instruct.backends import BackendError, Completion, GenParams, make_backend
from ensemble_instruct.backends.openai_compat import HttpBackend
from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.run import run_generation
from ensemble_instruct.store import read_jsonl
from faultproxy import KINDS, FaultProxy, always, first_attempts, seeded
from test_pipeline import writer

# The client's timeout: well above the server's latency on a busy 2-core machine, so that every timeout
# the backend counts is one the proxy caused, and short enough that stalls keep the tests fast.
TIMEOUT_S = 4.0
GREEDY = GenParams(temperature=0.0, max_new_tokens=8, seed=7)
FAULTS = [k for k in KINDS if k != "ok"]
# The name the backend gives (in Completion.faults) to the fault each injected kind is.
SEEN_AS = {
    "http_429": "http_429", "http_500": "http_500", "http_503": "http_503",
    "reset": "reset", "reset_mid_body": "reset",
    "stall": "timeout", "stall_mid_body": "timeout", "trickle": "timeout",
    "truncated_json": "bad_json", "malformed_json": "bad_json", "bad_gzip": "bad_json",
    "no_choices": "no_choices",
}  # fmt: skip
WITH_RETRY_AFTER = {"http_429", "http_503"}
# Mixed schedules: every kind, about 40% of attempts in all, stalls rarer as each costs a timeout.
RATES = {k: 0.02 if SEEN_AS[k] == "timeout" else 0.04 for k in FAULTS}
RUN_RATES = {k: 2 * rate for k, rate in RATES.items()}  # a run sends few requests: fault most of them


@pytest.fixture(scope="module", autouse=True)
def tally():
    """Prints how many faults the module injected in all (the figure a closing note reports)."""
    yield
    injected = FaultProxy.injected_by_all
    print(f"\nfaults injected: {sum(injected.values())} ({dict(sorted(injected.items()))})")


def count_prompt(n: int) -> str:
    """The model continues with n + 3, so every answer shows which prompt it belongs to."""
    return f"Count: {n}, {n + 1}, {n + 2},"


def backend_to(url: str, **kw) -> HttpBackend:
    kw = {"max_concurrency": 4, "timeout_s": TIMEOUT_S, "max_retries": 3, "backoff_base_s": 0.01, **kw}
    return HttpBackend("smollm2", "smollm2", [url], **kw)


@pytest.fixture(scope="module")
def straight(smollm2_server):
    """The texts a batch gets when it is sent straight to the server, with the same concurrency."""
    cache: dict[tuple[str, ...], list[str]] = {}

    def texts(prompts: list[str]) -> list[str]:
        if tuple(prompts) not in cache:
            backend = backend_to(smollm2_server)  # new connections: the server drops idle ones after a while
            done = backend.generate(prompts, GREEDY)
            backend.close()
            assert all(c.ok and c.faults == {} for c in done), done
            cache[tuple(prompts)] = [c.text for c in done]
        return cache[tuple(prompts)]

    return texts


def faults_seen(done: list[Completion]) -> Counter[str]:
    return sum((Counter(c.faults) for c in done), Counter())


def as_seen(injected: Counter[str]) -> Counter[str]:
    return sum((Counter({SEEN_AS[k]: n}) for k, n in injected.items()), Counter())


def assert_own_answers(done: list[Completion], expected: list[str]) -> None:
    """Each prompt got its own answer: the one it gets straight from the server."""
    assert len(set(expected)) == len(expected)  # distinct answers, so a mix-up could not go unseen
    assert all(c.ok for c in done), [c.error for c in done]
    assert [c.text for c in done] == expected


def assert_retry_after_honoured(proxy: FaultProxy, expected: int) -> None:
    waits = proxy.retry_waits()
    assert len(waits) == expected
    assert all(waited >= retry_after for waited, retry_after in waits), waits


# -- one kind of fault at a time --------------------------------------------------------------


@pytest.mark.parametrize("kind", FAULTS)
def test_each_fault_is_retried_counted_and_harmless(kind, smollm2_server, straight):
    prompts = [count_prompt(n) for n in (1, 11, 21)]
    with FaultProxy(smollm2_server, first_attempts(kind), client_timeout_s=TIMEOUT_S) as proxy:
        backend = backend_to(proxy.url)
        done = backend.generate(prompts, GREEDY)
        backend.close()
    assert_own_answers(done, straight(prompts))
    assert proxy.injected == {kind: 3}
    assert [c.faults for c in done] == [{SEEN_AS[kind]: 1}] * 3
    assert_retry_after_honoured(proxy, expected=3 if kind in WITH_RETRY_AFTER else 0)
    assert backend.replicas[0].in_flight == 0


# -- all kinds at once, concurrently ----------------------------------------------------------


def test_a_mixed_schedule_never_gives_a_prompt_another_prompts_answer(smollm2_server, straight):
    starts = [1, 11, 21, 31, 51, 61, 71, 81, 91, 101, 111, 121, 131, 141, 151, 161]  # the model counts on right
    prompts = [count_prompt(n) for n in starts]
    with FaultProxy(smollm2_server, seeded(RATES, seed=3, max_faults=2), client_timeout_s=TIMEOUT_S) as proxy:
        backend = backend_to(proxy.url, max_concurrency=4)
        done = backend.generate(prompts, GREEDY)
        backend.close()
    assert_own_answers(done, straight(prompts))
    assert all(c.text.lstrip().startswith(str(n + 3)) for c, n in zip(done, starts)), [c.text for c in done]
    injected = proxy.injected
    assert sum(injected.values()) >= 10 and len(injected) >= 6  # the seed gives a real mixture
    assert faults_seen(done) == as_seen(injected)
    assert_retry_after_honoured(proxy, expected=injected["http_429"] + injected["http_503"])
    assert backend.replicas[0].peak_in_flight > 1 and backend.replicas[0].in_flight == 0


# -- a server that stays down -----------------------------------------------------------------


@pytest.mark.parametrize(("down", "error"), [
    ("http_503", "HTTP 503 from"),
    ("stall", "timed out talking to"),
    ("closed", "cannot connect to"),
])  # fmt: skip
def test_a_server_that_stays_down_gives_error_completions_in_bounded_time(down, error, smollm2_server):
    timeout_s, retries, prompts = 1.0, 2, [count_prompt(n) for n in (1, 11, 21)]
    plan = always("ok" if down == "closed" else down)
    proxy = FaultProxy(smollm2_server, plan, client_timeout_s=timeout_s, methods=("GET", "POST"))
    if down == "closed":
        proxy.close()  # nothing listens on its port any more
    backend = backend_to(proxy.url, timeout_s=timeout_s, max_retries=retries)
    started = time.monotonic()
    done = backend.generate(prompts, GREEDY)
    elapsed = time.monotonic() - started
    with pytest.raises(BackendError) as raised:
        backend.check()
    backend.close()
    proxy.close()
    assert all(c.finish_reason == "error" and c.text == "" for c in done)
    assert all(c.error.startswith(f"smollm2: {error}") and c.error.endswith("(after 3 attempts)") for c in done)
    assert all(sum(c.faults.values()) == retries + 1 for c in done)
    # the prompts run side by side, each with three attempts: three timeouts or two Retry-After waits at most
    assert elapsed < (retries + 1) * timeout_s + retries * proxy.retry_after_s + 2.0
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"smollm2: no answer from {proxy.url}/v1/models")
    if down != "closed":
        assert proxy.injected[down] == len(prompts) * (retries + 1) + 1  # the check's GET too


# -- a whole generation run -------------------------------------------------------------------


def generate(out_dir, base_url: str) -> dict:
    """A small run whose extra outputs come from the http member at base_url."""
    cfg = build_config({
        "members": [
            {"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]},
            {"name": "remote", "backend": "http", "model": "smollm2", "base_urls": [base_url],
             "roles": ["outputs"], "timeout_s": TIMEOUT_S, "max_retries": 3, "max_concurrency": 4},
        ],
        "type_a": {"target": 2}, "type_b": {"target": 2}, "instructions": {"batch_size": 2},
        "outputs": {"sampling": {"max_new_tokens": 16}}, "exports": ["jsonl"],
        # answer hygiene off: the scripted instructions are restated by their instances
        "consensus": {"threshold": 0.0, "hygiene": False},
    })  # fmt: skip
    remote = make_backend(cfg.members[1])
    try:
        return run_generation(cfg, out_dir, backends={"gen": ScriptedBackend([writer], "gen"), "remote": remote})
    finally:
        remote.close()


def candidates(out_dir) -> dict[str, dict]:
    return {o["instance_id"]: o["candidate"] for o in read_jsonl(out_dir / "stages" / "outputs.jsonl")}


def test_a_generation_run_through_faults_counts_them_and_keeps_the_answers(tmp_path, smollm2_server):
    with FaultProxy(smollm2_server, seeded(RUN_RATES, seed=5, max_faults=2), client_timeout_s=TIMEOUT_S) as proxy:
        summary = generate(tmp_path / "faulty", proxy.url)
    clean = generate(tmp_path / "clean", smollm2_server)
    injected = sum(proxy.injected.values())
    assert injected >= 5  # the seed injects faults into this run's requests
    assert summary["faults"] == injected and clean["faults"] == 0
    assert summary["usage"]["outputs"]["remote"]["faults"] == injected
    faulty_answers = candidates(tmp_path / "faulty")
    assert len(faulty_answers) >= 4 and all(c["error"] is None for c in faulty_answers.values())
    assert faulty_answers == candidates(tmp_path / "clean")  # the same answer for every instance
    assert summary["kept"] == clean["kept"] == 4
