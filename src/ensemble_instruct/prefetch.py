"""Run a producer one step ahead of its consumer, in a thread: the generator model writes the next round
while the other members answer the current one, so both cores stay busy."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .backends import cancel_event

T = TypeVar("T")


class Prefetch(Generic[T]):
    """Iterate over produce() in a background thread that works on at most `depth` items the consumer
    has not taken yet (depth 0: no thread, each item made when it is asked for). An exception in the
    producer is raised in the consumer, at the item it replaced."""

    def __init__(self, produce: Callable[[], Iterator[T]], depth: int = 1) -> None:
        self._produce = produce
        self._thread: threading.Thread | None = None
        if depth == 0:
            return
        self._items: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cancel_event.set(self._stop)  # closing then cuts the producer's completion short
        items = None
        try:
            items = iter(self._produce())
            while self._wait_for_room():
                try:
                    item = next(items)
                except StopIteration:
                    break
                self._items.put(("item", item))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, Ctrl-C and crashes included
            self._items.put(("error", err))
        finally:
            # a producer stopped early ends now, not at garbage collection: a Prefetch of its own inside it
            # (the pipeline's first stage) is closed before this one says it has ended
            if items is not None and hasattr(items, "close"):
                with contextlib.suppress(BaseException):  # it was told to stop; how it stopped no longer matters
                    items.close()
        self._items.put(("end", None))

    def _wait_for_room(self) -> bool:
        while not self._stop.is_set():
            if self._room.acquire(timeout=0.1):
                return not self._stop.is_set()
        return False

    def __iter__(self) -> Iterator[T]:
        if self._thread is None:
            yield from self._produce()
            return
        while True:
            kind, value = self._items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            self._room.release()
            yield value

    def close(self) -> None:
        """Stop producing and wait for the thread: it finishes (or cancels) the item it was making."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
