"""The OpenAI-compatible HTTP backend: fault handling against a mock transport, then the real thing
against llama-cpp-python's server running SmolLM2-135M-Instruct (skipped when it is not installed)."""

from __future__ import annotations

import json
import random
import time

import httpx
import pytest

from ensemble_instruct.backends import BackendError, GenParams
from ensemble_instruct.backends.openai_compat import HttpBackend, normalise_base_url
from ensemble_instruct.config import MemberConfig

GREEDY = GenParams(temperature=0.0, max_new_tokens=8, seed=7)


def ok_body(text: str = "hello", finish: str = "stop", **usage: object) -> dict:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, **usage}
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}], "usage": usage}


class Script:
    """A MockTransport handler that answers requests in turn from a list of responses."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.responses[min(len(self.requests), len(self.responses)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply


def mock_backend(handler, urls=("http://mock:1",), **kw) -> tuple[HttpBackend, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("backoff_base_s", 0.01)
    backend = HttpBackend("mock", "m", list(urls), transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw)
    return backend, sleeps


# -- fault handling, against a mock transport -------------------------------------------------


def test_base_urls_are_normalised():
    assert normalise_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalise_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalise_base_url("h:8000/") == "http://h:8000/v1"


def test_429_retry_after_is_honoured_and_capped():
    script = Script(
        httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}}),
        httpx.Response(503, headers={"Retry-After": "100000"}, text="busy"),
        httpx.Response(200, json=ok_body("fine")),
    )
    backend, sleeps = mock_backend(script)
    [c] = backend.generate(["hi"], GREEDY)
    assert c.ok and c.text == "fine"
    assert c.faults == {"http_429": 1, "http_503": 1}
    assert sleeps == [2.0, 60.0]
    backend.close()


def test_500_then_success_with_backoff():
    backend, sleeps = mock_backend(Script(httpx.Response(500, text="oops"), httpx.Response(200, json=ok_body())))
    [c] = backend.generate(["hi"], GREEDY)
    assert c.ok and c.text == "hello" and c.faults == {"http_500": 1}
    assert len(sleeps) == 1 and 0.005 <= sleeps[0] <= 0.01
    backend.close()


def test_malformed_json_missing_choices_and_resets_are_retried():
    script = Script(
        httpx.Response(200, content=b'{"choices": [{"text": "trunc'),
        httpx.Response(200, json={"object": "error", "message": "overloaded"}),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=ok_body("done", prompt_tokens_details={"cached_tokens": 3})),
    )
    backend, sleeps = mock_backend(script, max_retries=5)
    [c] = backend.generate(["hi"], GREEDY)
    assert c.ok and c.text == "done"
    assert c.faults == {"bad_json": 1, "no_choices": 1, "reset": 1, "timeout": 1, "connect": 1}
    assert (c.prompt_tokens, c.completion_tokens, c.cached_tokens) == (5, 2, 3)
    assert [s <= 0.01 * 2**i for i, s in enumerate(sleeps)] == [True] * 5
    backend.close()


def test_client_errors_are_not_retried():
    script = Script(httpx.Response(400, json={"error": {"message": "max_tokens is too large"}}))
    backend, sleeps = mock_backend(script)
    [c] = backend.generate(["hi"], GREEDY)
    assert not c.ok and c.finish_reason == "error" and c.text == ""
    assert "max_tokens is too large" in c.error and c.faults == {"http_400": 1}
    assert len(script.requests) == 1 and sleeps == []
    backend.close()


def test_retries_run_out_into_an_error_completion():
    script = Script(httpx.Response(503, text="down"))
    backend, sleeps = mock_backend(script, max_retries=2)
    [c] = backend.generate(["hi"], GREEDY)
    assert c.finish_reason == "error" and "after 3 attempts" in c.error
    assert c.faults == {"http_503": 3} and len(script.requests) == 3 and len(sleeps) == 2
    backend.close()


def test_an_unexpected_exception_is_a_value():
    backend, _ = mock_backend(Script(RuntimeError("boom")))
    [c] = backend.generate(["hi"], GREEDY)
    assert c.finish_reason == "error" and "boom" in c.error
    backend.close()


def test_request_body_follows_params():
    script = Script(
        httpx.Response(200, json={"choices": [{"message": {"content": "x STOP y"}}]}),
        httpx.Response(200, json=ok_body()),
    )
    backend, _ = mock_backend(script)
    params = GenParams(temperature=0.7, top_k=40, top_p=0.9, max_new_tokens=20, min_new_tokens=3,
                       stop=("a", "b", "", "c", "d", "STOP"), seed=11, presence_penalty=0.5)  # fmt: skip
    [chat] = backend.generate([[{"role": "user", "content": "hi"}]], params)
    backend.generate(["plain"], GenParams())
    first, second = (json.loads(r.content) for r in script.requests)
    assert script.requests[0].url.path == "/v1/chat/completions"
    assert first == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "temperature": 0.7,
        "top_p": 0.9, "seed": 11, "stop": ["a", "b", "c", "d"], "top_k": 40, "presence_penalty": 0.5,
        "min_tokens": 3,
    }  # fmt: skip
    assert chat.text == "x " and chat.finish_reason == "stop"  # the fifth stop string is cut client-side
    assert script.requests[1].url.path == "/v1/completions"
    assert set(second) == {"model", "prompt", "max_tokens", "temperature", "top_p", "seed"}
    backend.close()


def test_results_stay_in_prompt_order_under_concurrency():
    def echo(request: httpx.Request) -> httpx.Response:
        time.sleep(random.uniform(0, 0.02))
        return httpx.Response(200, json=ok_body(json.loads(request.content)["prompt"].upper()))

    backend, _ = mock_backend(echo, max_concurrency=4)
    prompts = [f"prompt {i}" for i in range(40)]
    assert [c.text for c in backend.generate(prompts, GREEDY)] == [p.upper() for p in prompts]
    assert backend.replicas[0].peak_in_flight <= 4
    backend.close()


def test_a_failing_replica_is_skipped_and_the_retry_goes_elsewhere():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bad":
            return httpx.Response(502, text="bad gateway")
        return httpx.Response(200, json=ok_body("from good"))

    backend, sleeps = mock_backend(handler, urls=["http://bad:1", "http://good:1"], max_concurrency=1)
    results = backend.generate(["a", "b", "c", "d"], GREEDY)
    assert all(c.ok and c.text == "from good" for c in results)
    bad, good = backend.replicas
    assert bad.requests == 1 and good.requests == 4  # tried once, then cooling down
    assert sleeps == []  # a retry on a fresh replica does not wait
    backend.close()


def test_from_member_reads_the_api_key(monkeypatch):
    member = MemberConfig(name="hosted", backend="http", model="m", kind="base",
                          base_urls=["http://mock:1"], api_key_env="EI_TEST_KEY")  # fmt: skip
    monkeypatch.delenv("EI_TEST_KEY", raising=False)
    with pytest.raises(BackendError, match="EI_TEST_KEY"):
        HttpBackend.from_member(member)
    monkeypatch.setenv("EI_TEST_KEY", "sekrit")
    backend = HttpBackend.from_member(member)
    assert backend.instruction_tuned is False and backend.max_retries == member.max_retries
    assert all(client.headers["authorization"] == "Bearer sekrit" for client in backend._clients)
    backend.close()


# -- against a real OpenAI-compatible server -------------------------------------------------

COUNT = "Count: {}, {}, {},"


def count_prompt(n: int) -> str:
    return COUNT.format(n, n + 1, n + 2)


@pytest.fixture(scope="module")
def smol(smollm2_server):
    backend = HttpBackend("smollm2", "smollm2", [smollm2_server], max_concurrency=4, timeout_s=60)
    yield backend
    backend.close()


def test_completion_mode_returns_text(smol):
    smol.check()
    assert smol.models()
    [c] = smol.generate([count_prompt(1)], GREEDY)
    assert c.ok and c.text.lstrip().startswith("4"), c
    assert c.prompt_tokens > 0 and c.completion_tokens > 0 and c.seconds > 0 and c.faults == {}


def test_same_seed_same_text(smol):
    prompt = "Once upon a time, in a small village by the sea,"

    def from_scratch(params):
        # The server keeps the cache of its last prompt and would read only the final token of a
        # repeated one, which shifts the logits slightly; an unrelated prompt first clears that.
        smol.generate(["Zebra crossings are"], GenParams(max_new_tokens=1))
        return smol.generate([prompt], params)[0]

    greedy = GenParams(temperature=0.0, max_new_tokens=16, seed=3)
    first, second = from_scratch(greedy), from_scratch(greedy)
    assert first.ok and first.text == second.text and first.text.strip()
    sampled = GenParams(temperature=1.0, top_k=50, max_new_tokens=16, seed=5)
    assert from_scratch(sampled).text == from_scratch(sampled).text


def test_stop_strings_cut_the_text(smol):
    [server_side] = smol.generate([count_prompt(1)], GenParams(max_new_tokens=16, stop=(" 6",)))
    assert server_side.ok and " 6" not in server_side.text and "5" in server_side.text
    # the fifth stop string is not sent to the server; the client cuts at it
    client_side = GenParams(max_new_tokens=16, stop=("zz", "yy", "xx", "ww", "5"))
    [c] = smol.generate([count_prompt(1)], client_side)
    assert c.ok and "5" not in c.text and "4" in c.text and c.finish_reason == "stop"


def test_chat_mode(smol):
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    [c] = smol.generate([messages], GenParams(max_new_tokens=12))
    assert c.ok and "paris" in c.text.lower() and c.prompt_tokens > 10


def test_max_tokens_gives_length(smol):
    [c] = smol.generate([count_prompt(1)], GenParams(max_new_tokens=3))
    assert c.ok and c.finish_reason == "length" and c.completion_tokens == 3


def test_a_concurrent_batch_comes_back_in_order(smollm2_server):
    starts = [1, 11, 21, 31, 41, 51, 61, 71]
    prompts = [count_prompt(n) for n in starts]
    backend = HttpBackend("smollm2", "smollm2", [smollm2_server], max_concurrency=4)
    alone = [backend.generate([p], GREEDY)[0].text for p in prompts]
    assert backend.replicas[0].peak_in_flight == 1
    batch = backend.generate(prompts, GREEDY)
    backend.close()
    assert all(c.ok for c in batch)
    assert [c.text for c in batch] == alone  # each answer is the one its own prompt gets alone
    assert [c.text.lstrip()[0] for c in batch] == [str(n + 3)[0] for n in starts]
    assert 3 <= backend.replicas[0].peak_in_flight <= 4


def test_two_replicas_share_the_load(smollm2_server, smollm2_path):
    from servers import llama_server

    with llama_server(smollm2_path) as second:
        backend = HttpBackend("smollm2", "smollm2", [smollm2_server, second + "/v1"], max_concurrency=2)
        results = backend.generate([count_prompt(n) for n in range(1, 9)], GREEDY)
        backend.close()
    assert all(c.ok for c in results)
    assert all(r.requests >= 2 for r in backend.replicas) and sum(r.requests for r in backend.replicas) == 8


def test_unreachable_server_is_an_error_completion():
    from servers import free_port

    backend = HttpBackend("nobody", "m", [f"http://127.0.0.1:{free_port()}"], max_retries=2, backoff_base_s=0.01)
    with pytest.raises(BackendError, match="no answer from"):
        backend.check()
    [c] = backend.generate(["hi"], GREEDY)
    backend.close()
    assert c.finish_reason == "error" and c.faults == {"connect": 3}


def test_a_404_path_is_not_retried(smollm2_server):
    backend = HttpBackend("smollm2", "smollm2", [smollm2_server + "/no/such/path"], backoff_base_s=0.01)
    [c] = backend.generate([count_prompt(1)], GREEDY)
    backend.close()
    assert c.finish_reason == "error" and "HTTP 404" in c.error
    assert c.faults == {"http_404": 1} and backend.replicas[0].requests == 1
