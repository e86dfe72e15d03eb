"""A fault-injecting reverse proxy for tests: it stands on 127.0.0.1 in front of a real OpenAI-compatible
server and, following a plan, answers some requests with a fault instead of the server's response.

A plan maps (request key, attempt) to a fault kind, where the key identifies a request by its method,
path and body, and the attempt counts how often that same request arrived before. A retry resends the
same body, so a plan can say "the first attempt of every prompt fails" however the requests interleave,
and a seeded plan injects the same faults into the same requests on every run.

Every request is recorded (kind, arrival time, when a fault answer began and the Retry-After it carried),
so tests can compare what was injected with what the client counted, and check that a retry did not
arrive before the Retry-After said.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Plan = Callable[[str, int], str]  # (request key, attempt of that request, from 0) -> a kind in KINDS

# What each kind does; "ok" forwards the request and returns the server's response untouched.
KINDS = {
    "ok": "the server's own response",
    "http_429": "429 with a Retry-After header",
    "http_500": "500 with a JSON error body",
    "http_503": "503 with a Retry-After header",
    "reset": "the connection reset before any response",
    "reset_mid_body": "the server's response cut by a reset halfway through its body",
    "stall": "no response for longer than the client waits, then a late answer on the same connection",
    "stall_mid_body": "headers and half the body, then silence for longer than the client waits",
    "trickle": "a 200 whose body arrives a byte at a time, each gap shorter than the client timeout",
    "truncated_json": "a complete 200 response whose JSON body is cut in half",
    "malformed_json": "a 200 whose body is not JSON",
    "bad_gzip": "a 200 that claims gzip encoding but is not gzip",
    "no_choices": "a 200 whose JSON has no choices",
}
LATE_TEXT = "LATE ANSWER"  # what a stalled request finally gets; a client that reads it mixed up responses


def first_attempts(kind: str, n: int = 1) -> Plan:
    """The first n attempts of every request fail with kind; then the server answers."""
    return lambda key, attempt: kind if attempt < n else "ok"


def always(kind: str) -> Plan:
    """A server that never recovers."""
    return lambda key, attempt: kind


def seeded(rates: Mapping[str, float], seed: int, max_faults: int) -> Plan:
    """Each attempt fails with kind k with probability rates[k], decided from the seed, the request and
    the attempt alone (so the order requests arrive in changes nothing); a request's attempts after
    its first max_faults are answered by the server, so a client retrying that often always gets through."""
    kinds, weights = list(rates), list(rates.values())
    ok_weight = 1.0 - sum(weights)
    if ok_weight < 0:
        raise ValueError("fault rates add up to more than 1")

    def plan(key: str, attempt: int) -> str:
        if attempt >= max_faults:
            return "ok"
        rng = random.Random(f"{seed}:{key}:{attempt}")
        return rng.choices([*kinds, "ok"], [*weights, ok_weight])[0]

    return plan


@dataclass
class Exchange:
    """One request the proxy received, and what it did with it."""

    key: str
    attempt: int
    kind: str
    method: str
    path: str
    arrived: float  # time.monotonic()
    answered: float | None = None  # time.monotonic() just before a fault answer was sent
    retry_after: float | None = None  # the Retry-After it carried, seconds


class FaultProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to upstream, injecting the faults plan chooses
    into requests whose method is in methods (by default only POSTs: generation, not health checks)."""

    injected_by_all: Counter[str] = Counter()  # every closed proxy's faults, for the session's tally

    def __init__(
        self,
        upstream: str,
        plan: Plan,
        *,
        client_timeout_s: float,
        retry_after_s: int = 1,
        methods: Iterable[str] = ("POST",),
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.client_timeout_s = client_timeout_s
        self.retry_after_s = retry_after_s
        self.methods = frozenset(methods)
        self.exchanges: list[Exchange] = []
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()  # releases stalled requests at once when the proxy closes
        # a fresh connection per forwarded request: a pooled one the server closed while idle would
        # break a request the plan meant to pass, a fault nobody injected
        self._forward = httpx.Client(timeout=120.0, limits=httpx.Limits(max_keepalive_connections=0))
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far, by kind."""
        with self._lock:
            return Counter(e.kind for e in self.exchanges if e.kind != "ok")

    def retry_waits(self) -> list[tuple[float, float]]:
        """For every fault that carried a Retry-After and was retried: (seconds the client waited before
        the retry arrived, the Retry-After)."""
        with self._lock:
            exchanges = list(self.exchanges)
        waits = []
        for e in exchanges:
            if e.retry_after is None:
                continue
            retry = next((r for r in exchanges if r.key == e.key and r.attempt == e.attempt + 1), None)
            if retry is not None:
                waits.append((retry.arrived - e.answered, e.retry_after))
        return waits

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        FaultProxy.injected_by_all.update(self.injected)
        self._server.shutdown()
        self._server.server_close()
        self._forward.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request ------------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        key = hashlib.sha256(f"{h.command} {h.path} ".encode() + body).hexdigest()[:16]
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] += 1
        kind = self.plan(key, attempt) if h.command in self.methods else "ok"
        exchange = Exchange(key, attempt, kind, h.command, h.path, time.monotonic())
        with self._lock:
            self.exchanges.append(exchange)
        try:
            getattr(self, "_" + kind)(h, body, exchange)
        except OSError:
            h.close_connection = True  # the client went away first (after a stall, say): nothing to do

    def _upstream(self, h: _Handler, body: bytes) -> httpx.Response:
        headers = {"Content-Type": h.headers.get("Content-Type", "application/json")}
        return self._forward.request(h.command, self.upstream + h.path, content=body, headers=headers)

    def _ok(self, h: _Handler, body: bytes, e: Exchange) -> None:
        resp = self._upstream(h, body)
        _send(h, resp.status_code, resp.content, resp.headers.get("Content-Type", "application/json"))

    def _error(self, h: _Handler, e: Exchange, code: int, retry_after: bool) -> None:
        headers = {}
        if retry_after:
            e.retry_after = float(self.retry_after_s)
            headers["Retry-After"] = str(self.retry_after_s)
        e.answered = time.monotonic()
        _send(h, code, json.dumps({"error": {"message": f"injected {e.kind}"}}).encode(), headers=headers)

    def _http_429(self, h: _Handler, body: bytes, e: Exchange) -> None:
        self._error(h, e, 429, retry_after=True)

    def _http_500(self, h: _Handler, body: bytes, e: Exchange) -> None:
        self._error(h, e, 500, retry_after=False)

    def _http_503(self, h: _Handler, body: bytes, e: Exchange) -> None:
        self._error(h, e, 503, retry_after=True)

    def _reset(self, h: _Handler, body: bytes, e: Exchange) -> None:
        _abort(h)

    def _reset_mid_body(self, h: _Handler, body: bytes, e: Exchange) -> None:
        content = self._upstream(h, body).content
        _send_head(h, 200, len(content))
        h.wfile.write(content[: len(content) // 2])
        _abort(h)

    def _stall(self, h: _Handler, body: bytes, e: Exchange) -> None:
        self._closing.wait(self.client_timeout_s + 1.0)
        # By now the client gave up; if it still reads this connection, it gets a valid response that
        # belongs to no prompt of its own.
        late = {"choices": [{"index": 0, "text": LATE_TEXT, "message": {"role": "assistant", "content": LATE_TEXT},
                             "finish_reason": "stop"}]}
        _send(h, 200, json.dumps(late).encode())

    def _stall_mid_body(self, h: _Handler, body: bytes, e: Exchange) -> None:
        content = self._upstream(h, body).content
        _send_head(h, 200, len(content))
        h.wfile.write(content[: len(content) // 2])
        self._closing.wait(self.client_timeout_s + 1.0)
        h.wfile.write(content[len(content) // 2 :])

    def _trickle(self, h: _Handler, body: bytes, e: Exchange) -> None:
        # Leading whitespace is valid JSON, so a client that waits it out gets a correct answer, late.
        content = self._upstream(h, body).content
        gap = self.client_timeout_s / 4
        pad = int((self.client_timeout_s + 1.0) / gap) + 1
        _send_head(h, 200, pad + len(content))
        for _ in range(pad):
            h.wfile.write(b" ")
            if self._closing.wait(gap):
                break
        h.wfile.write(content)

    def _truncated_json(self, h: _Handler, body: bytes, e: Exchange) -> None:
        content = self._upstream(h, body).content
        _send(h, 200, content[: len(content) // 2])

    def _malformed_json(self, h: _Handler, body: bytes, e: Exchange) -> None:
        _send(h, 200, b"<html><body>502 Bad Gateway</body></html>")

    def _bad_gzip(self, h: _Handler, body: bytes, e: Exchange) -> None:
        _send(h, 200, b"this is not gzip", headers={"Content-Encoding": "gzip"})

    def _no_choices(self, h: _Handler, body: bytes, e: Exchange) -> None:
        _send(h, 200, json.dumps({"object": "error", "message": "the model is overloaded"}).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # connections waiting to be accepted: a client may open hundreds at once
    block_on_close = False  # a keep-alive connection the client never closed must not hold up close()
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up first is routine here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client could (wrongly) read one response for another
    timeout = 60  # an idle keep-alive connection is dropped after this
    server: _Server

    def do_GET(self) -> None:
        self.server.proxy._handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows what a failing test needs


def _send_head(h: _Handler, code: int, length: int, content_type: str = "application/json",
               headers: Mapping[str, str] | None = None) -> None:
    h.send_response(code)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(length))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()


def _send(h: _Handler, code: int, content: bytes, content_type: str = "application/json",
          headers: Mapping[str, str] | None = None) -> None:
    _send_head(h, code, len(content), content_type, headers)
    h.wfile.write(content)
    h.wfile.flush()


def _abort(h: _Handler) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0) instead of an orderly close."""
    h.wfile.flush()
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True
