"""Model calls in flight. Each member's calls run in worker threads of its own, as many at once as its backend
takes; their results come back, in a queue, to the one thread that decides, so every decision is made in one
place and in an order fixed by the data, never by which call happened to finish first."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .backends import Backend, cancel_event

Then = Callable[[Any], None]


class Calls:
    """Calls to the members, made in worker threads and finished (`then`) in the thread that calls `finish`.

    A backend that serves many requests at once (an HTTP server's replicas) says how many calls it takes
    together in `concurrent_calls`; any other (one local model, decoding its batch) takes one at a time.
    With `parallel` off every call of every member waits for the one before: the baseline to measure against."""

    def __init__(self, backends: dict[str, Backend], parallel: bool = True) -> None:
        self._stop = threading.Event()
        self._finished: queue.Queue[tuple[str, int, Then, Future]] = queue.Queue()
        shared = None if parallel else ThreadPoolExecutor(max_workers=1, thread_name_prefix="calls")
        self._pools = {
            name: shared
            or ThreadPoolExecutor(
                max_workers=max(1, getattr(backend, "concurrent_calls", 1)), thread_name_prefix=f"calls-{name}"
            )
            for name, backend in backends.items()
        }
        self.prompts_in_flight: Counter[str] = Counter()  # by member: asked for and not answered yet
        self.peak_prompts_in_flight = 0
        self._open: dict[Future, object] = {}  # each call not finished yet, with the owner that may cancel it

    @property
    def busy(self) -> bool:
        return bool(self._open)

    def submit(self, member: str, prompts: int, work: Callable[[], Any], then: Then, owner: object = None) -> None:
        """Run work() among member's calls; then(its result) runs later, in `finish`, in the deciding thread."""
        future = self._pools[member].submit(self._in_worker, work)
        self._open[future] = owner
        self.prompts_in_flight[member] += prompts
        self.peak_prompts_in_flight = max(self.peak_prompts_in_flight, self.prompts_in_flight.total())
        future.add_done_callback(lambda f: self._finished.put((member, prompts, then, f)))

    def _in_worker(self, work: Callable[[], Any]) -> Any:
        cancel_event.set(self._stop)  # stopping the run cuts a completion in flight short
        return work()

    def finish(self, timeout: float = 0.1) -> bool:
        """Finish one call that came back (an error in its work is raised here); False if none came in time."""
        try:
            member, prompts, then, future = self._finished.get(timeout=timeout)
        except queue.Empty:
            return False
        self._open.pop(future, None)
        self.prompts_in_flight[member] -= prompts
        if not future.cancelled():
            then(future.result())
        return True

    def cancel(self, owner: object) -> None:
        """Drop the owner's calls that have not started (a round nobody will use); those running end normally."""
        for future, own in list(self._open.items()):
            if own is owner:
                future.cancel()

    def close(self) -> None:
        """Cancel what has not started, cut what runs short, and wait for the workers."""
        self._stop.set()
        for pool in set(self._pools.values()):
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Calls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
