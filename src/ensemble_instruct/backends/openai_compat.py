"""OpenAI-compatible servers (vLLM, Ollama, llama.cpp server, TGI, hosted APIs) over HTTP.

One model behind one or more replicas (base URLs). Each prompt is its own request, sent to the
least-busy replica; transport faults are retried with backoff, and a prompt that still fails comes
back as an error Completion, never as an exception.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from . import BackendError, Completion, GenParams, Prompt, cancel_event, cut_at_stop, params_for

if TYPE_CHECKING:
    from ..config import MemberConfig

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})  # any other status is final
MAX_STOP = 4  # the most stop strings OpenAI accepts; the rest are cut client-side only
MAX_RETRY_AFTER_S = 60.0  # a server's Retry-After is honoured up to this
MAX_BACKOFF_S = 30.0
COOLDOWN_BASE_S = 1.0  # a failing replica is avoided for this long, doubling per failure in a row
COOLDOWN_MAX_S = 30.0


def normalise_base_url(url: str) -> str:
    """'host:8000', 'http://host:8000/' and 'http://host:8000/v1' all become 'http://host:8000/v1'."""
    url = url.strip().rstrip("/")
    if not url:
        raise BackendError("an empty base URL")
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


@dataclass
class Replica:
    """One server of the model, with the counters that balance load across replicas."""

    url: str  # normalised, ends with /v1
    in_flight: int = 0
    peak_in_flight: int = 0
    requests: int = 0  # attempts sent, retries included
    failures: int = 0  # attempts that met a retryable fault
    streak: int = 0  # failures in a row; reset by a success
    cooldown_until: float = 0.0  # time.monotonic() before which other replicas are preferred


class _Fault(Exception):
    """One failed attempt: its kind (the key in Completion.faults) and whether to retry."""

    def __init__(self, kind: str, message: str, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retryable, self.retry_after = kind, message, retryable, retry_after


class HttpBackend:
    """A model served by OpenAI-compatible endpoints: str prompts go to /v1/completions, message
    lists to /v1/chat/completions."""

    def __init__(
        self,
        name: str,
        model: str,
        base_urls: Sequence[str],
        instruction_tuned: bool = True,
        api_key: str | None = None,
        max_concurrency: int = 4,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_urls:
            raise BackendError(f"{name}: an http backend needs at least one base URL")
        self.name = name
        self.model = model
        self.instruction_tuned = instruction_tuned
        self.replicas = [Replica(normalise_base_url(u)) for u in base_urls]
        self.max_concurrency = max(1, max_concurrency)
        self.concurrent_calls = self.max_concurrency * len(self.replicas)  # calls the pipeline may make at once
        self.max_retries = max(0, max_retries)
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self._sleep = sleep
        self._random = random.Random()  # backoff jitter only; never touches generated text
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # one connection pool per replica: a pool's bookkeeping grows with its connections, and one pool for
        # every replica spent more CPU on it than on the requests (and let fewer requests out at once)
        tls = httpx.create_ssl_context()  # loading the CA bundle takes about 20 ms: once, not once per replica
        self._clients = [
            httpx.Client(
                headers=headers,
                verify=tls,
                timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
                limits=httpx.Limits(
                    max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                ),
                transport=transport,
            )
            for _ in self.replicas
        ]
        self._pool = ThreadPoolExecutor(max_workers=self.concurrent_calls, thread_name_prefix=f"http-{name}")
        self._closed = False

    @classmethod
    def from_member(cls, member: MemberConfig) -> HttpBackend:
        api_key = None
        if member.api_key_env:
            api_key = os.environ.get(member.api_key_env)
            if not api_key:
                raise BackendError(f"member {member.name}: environment variable {member.api_key_env} is not set")
        return cls(
            member.name, member.model, member.base_urls, instruction_tuned=member.kind != "base", api_key=api_key,
            max_concurrency=member.max_concurrency, timeout_s=member.timeout_s, max_retries=member.max_retries,
        )  # fmt: skip

    # -- the protocol -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: GenParams | Sequence[GenParams]) -> list[Completion]:
        if self._closed:
            raise BackendError(f"{self.name}: the backend is closed")
        # One request per prompt: futures[i] carries prompts[i] and nothing else, so a response
        # can only ever be attached to the prompt it was sent for.
        futures = [self._pool.submit(self._safe_one, p, gp) for p, gp in zip(prompts, params_for(prompts, params))]
        cancel = cancel_event.get()
        return [_wait(f, cancel) for f in futures]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            for client in self._clients:
                client.close()

    # -- health -------------------------------------------------------------------------------

    def models(self, replica: int = 0) -> list[str]:
        """The model ids one replica serves (GET /v1/models)."""
        url = self.replicas[replica].url + "/models"
        resp = self._clients[replica].get(url)
        resp.raise_for_status()
        return [str(m.get("id")) for m in resp.json().get("data", []) if isinstance(m, dict)]

    def check(self) -> None:
        """Raise BackendError, in one line, unless every replica answers /v1/models."""
        for i, replica in enumerate(self.replicas):
            try:
                self.models(i)
            except (httpx.HTTPError, ValueError, AttributeError) as err:
                raise BackendError(f"{self.name}: no answer from {replica.url}/models ({_first_line(err)})") from None

    # -- one prompt ---------------------------------------------------------------------------

    def _safe_one(self, prompt: Prompt, params: GenParams) -> Completion:
        started = time.perf_counter()
        try:
            return self._one(prompt, params, started)
        except Exception as err:  # noqa: BLE001 - a failure is a value, never an exception
            return Completion("", "error", seconds=time.perf_counter() - started, error=f"{self.name}: {err!r}")

    def _one(self, prompt: Prompt, params: GenParams, started: float) -> Completion:
        path, body = self._request(prompt, params)
        faults: dict[str, int] = {}
        tried: set[int] = set()
        for attempt in range(self.max_retries + 1):
            index = self._acquire(tried)
            tried.add(index)
            try:
                data = self._post(index, path, body)
                text, reason = _choice_text(data, chat=not isinstance(prompt, str))
            except _Fault as fault:
                faults[fault.kind] = faults.get(fault.kind, 0) + 1
                self._release(index, failed=fault.retryable, cooldown=fault.retry_after)
                if not fault.retryable or attempt == self.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    error = f"{self.name}: {fault.message}{tries}"
                    return Completion("", "error", seconds=time.perf_counter() - started, error=error, faults=faults)
                if not self._fresh_replica_left(tried):
                    self._sleep(self._delay(attempt, fault.retry_after))
                continue
            except BaseException:  # not a fault of the server's (a bug, an interrupt): still give the replica back
                self._release(index, failed=True)
                raise
            self._release(index, failed=False)
            text, cut = cut_at_stop(text, params.stop)
            usage = data["usage"] if isinstance(data.get("usage"), dict) else {}
            details = usage.get("prompt_tokens_details")
            return Completion(
                text,
                "length" if reason == "length" and not cut else "stop",
                prompt_tokens=_int(usage.get("prompt_tokens")),
                completion_tokens=_int(usage.get("completion_tokens")),
                cached_tokens=_int(details.get("cached_tokens")) if isinstance(details, dict) else 0,
                seconds=time.perf_counter() - started,
                faults=faults,
            )
        raise AssertionError("unreachable")

    def _request(self, prompt: Prompt, p: GenParams) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
        }
        if isinstance(prompt, str):
            path, body["prompt"] = "/completions", prompt
        else:
            path, body["messages"] = "/chat/completions", [dict(m) for m in prompt]
        stop = [s for s in p.stop if s][:MAX_STOP]
        if stop:
            body["stop"] = stop
        if p.top_k > 0:
            body["top_k"] = p.top_k  # not OpenAI, but vLLM, llama.cpp and others accept it
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        if p.min_new_tokens > 0:
            body["min_tokens"] = p.min_new_tokens  # a vLLM (and llama.cpp) extension
        return path, body

    def _post(self, replica: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One attempt: the parsed body of a 2xx response, or a _Fault. The attempt gives up once timeout_s
        has passed even while bytes keep coming: httpx's read timeout only bounds each wait between reads."""
        deadline = time.monotonic() + self.timeout_s
        url = self.replicas[replica].url + path
        try:
            with self._clients[replica].stream("POST", url, json=body) as resp:
                content = _read_until(resp, deadline)
        except httpx.TimeoutException as err:
            raise _Fault("timeout", f"timed out talking to {url} ({type(err).__name__})") from None
        except httpx.ConnectError as err:
            raise _Fault("connect", f"cannot connect to {url} ({_first_line(err)})") from None
        except httpx.UnsupportedProtocol as err:
            raise _Fault("bad_url", f"bad URL {url} ({_first_line(err)})", retryable=False) from None
        except httpx.TransportError as err:  # reset, truncated body, protocol error
            raise _Fault("reset", f"connection to {url} broke ({type(err).__name__}: {_first_line(err)})") from None
        except httpx.DecodingError as err:  # a body that its Content-Encoding does not fit
            raise _Fault("bad_json", f"undecodable body from {url} ({_first_line(err)})") from None
        if not resp.is_success:
            code = resp.status_code
            retry_after = _retry_after(resp) if code in (429, 503) else None
            message = f"HTTP {code} from {url}: {_server_message(content, resp.reason_phrase)}"
            raise _Fault(f"http_{code}", message, code in RETRY_STATUS, retry_after)
        try:
            data = json.loads(content)
        except ValueError:
            raise _Fault("bad_json", f"malformed JSON from {url}: {_decode(content)[:120]!r}") from None
        if not isinstance(data, dict):
            raise _Fault("bad_json", f"a JSON {type(data).__name__} instead of an object from {url}")
        return data

    # -- replicas -----------------------------------------------------------------------------

    def _acquire(self, tried: set[int]) -> int:
        """The replica for the next attempt: a healthy one before one cooling down, one this prompt
        has not tried before one it has, then the fewest requests in flight, then the fewest sent."""
        with self._lock:
            now = time.monotonic()
            rs = self.replicas
            index = min(
                range(len(rs)),
                key=lambda i: (rs[i].cooldown_until > now, i in tried, rs[i].in_flight, rs[i].streak, rs[i].requests),
            )
            r = rs[index]
            r.in_flight += 1
            r.requests += 1
            r.peak_in_flight = max(r.peak_in_flight, r.in_flight)
            return index

    def _release(self, index: int, failed: bool, cooldown: float | None = None) -> None:
        with self._lock:
            r = self.replicas[index]
            r.in_flight -= 1
            if not failed:
                r.streak = 0
                return
            r.failures += 1
            r.streak += 1
            wait = cooldown if cooldown is not None else COOLDOWN_BASE_S * 2 ** (r.streak - 1)
            r.cooldown_until = time.monotonic() + min(wait, COOLDOWN_MAX_S)

    def _fresh_replica_left(self, tried: set[int]) -> bool:
        """Whether a replica this prompt has not tried is healthy: then retry there at once."""
        with self._lock:
            now = time.monotonic()
            return any(i not in tried and r.cooldown_until <= now for i, r in enumerate(self.replicas))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return min(MAX_BACKOFF_S, self.backoff_base_s * 2**attempt) * self._random.uniform(0.5, 1.0)


def _wait(future: Future, cancel: threading.Event | None) -> Completion:
    """A request's completion; when the caller is cancelled, an error at once (a request in flight ends
    on its own, and its answer is not used)."""
    while cancel is not None and not cancel.is_set():
        try:
            return future.result(timeout=0.1)
        except FutureTimeout:
            continue
    if cancel is None:
        return future.result()
    future.cancel()
    return Completion("", "error", error="cancelled")


def _choice_text(data: dict[str, Any], chat: bool) -> tuple[str, str | None]:
    """The text and finish reason of choices[0]; a body without them is a retryable fault."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        detail = f": {_error_text(data)}" if _error_text(data) else ""
        raise _Fault("no_choices", f"a response without choices{detail}")
    choice = choices[0]
    if chat:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _Fault("no_choices", "a chat response without a message")
        text = message.get("content")  # null (a refusal, a tool call) reads as ""
    else:
        if "text" not in choice:
            raise _Fault("no_choices", "a completion response without text")
        text = choice.get("text")
    return (text if isinstance(text, str) else ""), choice.get("finish_reason")


def _error_text(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    err = data.get("error", data.get("detail", data.get("message")))
    if isinstance(err, dict):
        err = err.get("message", err)
    return " ".join(str(err).split())[:300] if err else ""


def _read_until(resp: httpx.Response, deadline: float) -> bytes:
    """The whole (decoded) body, or httpx.ReadTimeout once time.monotonic() passes deadline; leaving
    the response unread closes its connection, so no later request can read the rest of it."""
    chunks = []
    for chunk in resp.iter_bytes():
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the response took longer than timeout_s", request=resp.request)
    return b"".join(chunks)


def _decode(content: bytes) -> str:
    return content.decode("utf-8", "replace")


def _server_message(content: bytes, reason: str) -> str:
    try:
        message = _error_text(json.loads(content))
    except ValueError:
        message = ""
    return message or " ".join(_decode(content).split())[:300] or reason


def _retry_after(resp: httpx.Response) -> float | None:
    """Retry-After in seconds, or None (an HTTP date is left to the backoff)."""
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
