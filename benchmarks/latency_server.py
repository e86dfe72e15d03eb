"""An OpenAI-compatible server that answers after an injected latency, standing in for a cluster of replicas.

    python benchmarks/latency_server.py --ports 9000-9063 --latency 2 --jitter 0.5

Every answer is a function of the request alone (its prompt and seed), and fits the pipeline's prompts so that
every example is kept: an instruction prompt gets an instruction of made-up words drawn from the request's seed;
an instance prompt gets an input and an output derived from its instruction; an extra member's prompt, chat or
few-shot, gets the same output. Latency is `latency` seconds plus up to `jitter` more, at random, so answers
come back out of order. One process listens on every port (one port per replica) and serves requests
concurrently, as a batching server does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ensemble_instruct.prompts import END, INSTANCE_HEADERS, INSTRUCTION_HEADER  # noqa: E402

# made-up words, so that drawn instructions stay below the novelty threshold of one another
VOCAB = [f"{head}{tail}{n}" for head in "bdfgklmnprstvz" for tail in ("a", "e", "i", "o", "u") for n in range(40)]


def words(key: str, n: int) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return " ".join(VOCAB[int.from_bytes(digest[2 * i : 2 * i + 2], "big") % len(VOCAB)] for i in range(n))


def answer_of(instruction: str) -> str:
    return "Result: " + words("output " + instruction, 6) + "."


def input_of(instruction: str) -> str:
    return "Data " + words("input " + instruction, 5) + "."


def reply(body: dict) -> str:
    """The text a request gets: deterministic in its prompt and seed."""
    if "messages" in body:  # an instruction-tuned extra member: the instruction is the turn's first line
        return answer_of(body["messages"][-1]["content"].splitlines()[0].strip())
    prompt = body["prompt"]
    if prompt.startswith(INSTRUCTION_HEADER):
        rng = random.Random(body.get("seed", 0))
        return " Describe " + " ".join(rng.choice(VOCAB) for _ in range(8)) + ".\n" + END
    instruction = prompt.rsplit("instruction: ", 1)[1].splitlines()[0].strip()
    if prompt.endswith("output:"):  # a base extra member, few-shot
        return " " + answer_of(instruction)
    if prompt.startswith(INSTANCE_HEADERS["A"]):
        return f"input: {input_of(instruction)}\noutput: {answer_of(instruction)}\n{END}"
    return f"output: {answer_of(instruction)}\n{END}"


def response(path: str, body: dict) -> dict:
    text = reply(body)
    usage = {"prompt_tokens": len(str(body.get("prompt", body.get("messages", ""))).split()),
             "completion_tokens": len(text.split())}  # fmt: skip
    if path.endswith("/chat/completions"):
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
    return {"object": "text_completion", "model": body.get("model", "m"), "choices": [choice], "usage": usage}


class Server:
    def __init__(self, latency: float, jitter: float) -> None:
        self.latency, self.jitter = latency, jitter
        self.random = random.Random()  # timing only; never touches a text
        self.loop = asyncio.get_running_loop()
        self.in_flight = self.peak = self.served = 0
        self.area = 0.0  # requests in flight integrated over time, for the mean
        self.since = self.last = self.loop.time()

    def count(self, change: int) -> None:
        now = self.loop.time()
        self.area += self.in_flight * (now - self.last)
        self.last, self.in_flight = now, self.in_flight + change
        self.peak = max(self.peak, self.in_flight)

    def stats(self) -> dict:
        """Requests in flight (peak, time mean) and served since the last call, which starts a new count."""
        self.count(0)
        elapsed = max(self.last - self.since, 1e-9)
        out = {"peak_in_flight": self.peak, "mean_in_flight": self.area / elapsed, "served": self.served}
        self.peak, self.area, self.served, self.since = self.in_flight, 0.0, 0, self.last
        return out

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                if path.endswith("/stats"):
                    payload: dict = self.stats()
                elif method == "GET":
                    payload = {"object": "list", "data": [{"id": "m", "object": "model"}]}
                else:
                    self.count(+1)
                    try:
                        await asyncio.sleep(self.latency + self.jitter * self.random.random())
                    finally:
                        self.count(-1)
                    self.served += 1
                    payload = response(path, json.loads(raw))
                data = json.dumps(payload).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(ports: list[int], latency: float, jitter: float) -> None:
    server = Server(latency, jitter)
    servers = [await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=1024) for port in ports]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def port_range(text: str) -> list[int]:
    """'9000-9063', '9000,9002' or '9000'."""
    ports = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        ports += range(int(first), int(last or first) + 1)
    return ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=port_range, required=True, help="ports or ranges, e.g. 9000-9063 or 9000,9002")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--jitter", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.ports, args.latency, args.jitter))


if __name__ == "__main__":
    main()
