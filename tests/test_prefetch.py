"""The producer thread that lets the generator work one round ahead: order, bound, errors, stopping."""

import threading
import time

import pytest

from ensemble_instruct.backends import GenParams, cancel_event
from ensemble_instruct.prefetch import Prefetch


def test_items_arrive_in_order_and_complete():
    with Prefetch(lambda: iter(range(50))) as items:
        assert list(items) == list(range(50))


@pytest.mark.parametrize("depth", [1, 2])
def test_the_producer_never_runs_more_than_depth_items_ahead(depth):
    made, taken, ahead = [], [], []

    def produce():
        for k in range(20):
            made.append(k)
            ahead.append(len(made) - len(taken))
            yield k

    with Prefetch(produce, depth=depth) as items:
        for k in items:
            taken.append(k)
            time.sleep(0.005)  # a slow consumer: the producer would run far ahead if unbounded
    assert taken == list(range(20))
    # the item being made counts: at most `depth` made but not yet taken, plus the one in hand
    assert max(ahead) <= depth + 1


def test_depth_zero_makes_each_item_in_the_consumer_thread_when_asked():
    threads = []

    def produce():
        for k in range(3):
            threads.append(threading.current_thread())
            yield k

    with Prefetch(produce, depth=0) as items:
        assert list(items) == [0, 1, 2]
    assert set(threads) == {threading.current_thread()}


@pytest.mark.parametrize("error", [ValueError("bad round"), KeyboardInterrupt()])
def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it(error):
    def produce():
        yield 1
        yield 2
        raise error

    got = []
    with pytest.raises(type(error)), Prefetch(produce) as items:
        for k in items:
            got.append(k)
    assert got == [1, 2]


def test_closing_early_stops_the_producer_and_sets_its_cancel_event():
    seen = {}

    def produce():
        seen["event"] = cancel_event.get()
        k = 0
        while True:
            yield k
            k += 1

    with Prefetch(produce) as items:
        for k in items:
            if k == 3:
                break
    assert seen["event"] is not None and seen["event"].is_set()
    assert cancel_event.get() is None  # the consumer's own context is untouched


def test_a_cancelled_llamacpp_completion_returns_an_error_not_a_cut_text(smollm2):
    """Closing a producer cuts its model's completion short; the cut text must never pass for an answer."""
    event = threading.Event()
    result = {}

    def work():
        cancel_event.set(event)
        result["done"] = smollm2.generate(["Write a very long story about the sea."],
                                          GenParams(max_new_tokens=2000, min_new_tokens=2000))[0]

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.5)
    event.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result["done"].error == "cancelled" and result["done"].text == ""
    # and the backend still answers normally afterwards, from another thread without the event
    after = smollm2.generate(["Say hello."], GenParams(max_new_tokens=8))[0]
    assert after.ok and after.completion_tokens > 0
