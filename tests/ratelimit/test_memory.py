"""The in-memory store: per-key buckets on an injected clock, bounded as an LRU."""

from __future__ import annotations

import math

from gateway.store.bucket import Limit
from gateway.store.memory import MemoryStore
from tests.ratelimit.conftest import FakeClock

LIMIT = Limit(rate=2.0, burst=2)


def test_keys_have_their_own_buckets(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    assert [store.take("a", LIMIT, 1).allowed for _ in range(3)] == [True, True, False]
    assert store.take("b", LIMIT, 1).allowed
    clock.advance(0.5)
    assert store.take("a", LIMIT, 1).allowed
    assert not store.take("a", LIMIT, 1).allowed


def test_admitted_over_a_window(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    admitted = 0
    for _ in range(600):  # 10 s at 3x the rate of 2/s
        admitted += store.take("k", LIMIT, 1).allowed
        clock.advance(1 / 60)
    assert admitted == 2 + math.floor(2 * 599 / 60)  # burst + rate * T, T = 599 steps


def test_full_buckets_are_forgotten(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    store.take("a", LIMIT, 1)
    assert len(store) == 1
    clock.advance(10)
    store.take("a", LIMIT, 0)  # a free request after refill: nothing worth keeping
    assert len(store) == 0


def test_bounded_least_recently_used_goes_first(clock: FakeClock) -> None:
    store = MemoryStore(max_keys=2, clock=clock)
    for key in ("a", "b"):
        store.take(key, LIMIT, 2)
    store.take("a", LIMIT, 0)  # touch a: b is now the oldest
    store.take("c", LIMIT, 2)
    assert (len(store), store.evictions) == (2, 1)
    assert not store.take("a", LIMIT, 1).allowed  # still empty: kept
    assert store.take("b", LIMIT, 2).allowed  # dropped, hence full again
    assert repr(store) == "<MemoryStore keys=2/2 evictions=2>"
