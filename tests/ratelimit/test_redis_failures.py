"""Redis killed, paused, restarted: answers per policy within the timeout, no hang.

Each test owns its redis-server (`redis_factory`) and signals it. Time bounds are
asserted with asyncio.wait_for; the breaker's backoff runs on the fake clock, so
"Redis is back" needs no sleeping either.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.config.ratelimit_model import RateLimitSettings, RedisSettings
from gateway.store.breaker import Breaker, State
from gateway.store.bucket import Limit
from gateway.store.redis_store import Check, RedisStore, StoreUnavailable
from gateway.store.stores import RateLimitStores
from tests.ratelimit.conftest import FakeClock, RedisServer

LIMIT = Limit(rate=1.0, burst=3)
TIMEOUT_S = 0.05
BOUND_S = 0.5  # generous bound for one decision (timeout 50 ms)


@pytest.fixture
async def setup(
    redis_factory: Callable[[], RedisServer], clock: FakeClock
) -> AsyncIterator[tuple[RedisServer, RateLimitStores]]:
    server = redis_factory()
    settings = RedisSettings.model_validate(
        {"url": server.url, "timeout": "50ms", "breaker": {"failures": 2, "open_for": "1s"}}
    )
    stores = RateLimitStores(settings, RateLimitSettings(), clock=clock)
    yield server, stores
    await stores.close()


async def decide(stores: RateLimitStores, key: str, fail_open: bool = True) -> object:
    [d] = await asyncio.wait_for(stores.take_shared([Check(key, LIMIT, 1)], [fail_open]), BOUND_S)
    return d


async def test_killed_fail_open_decides_from_memory(
    setup: tuple[RedisServer, RateLimitStores],
) -> None:
    server, stores = setup
    assert (await decide(stores, "k")) is not None and stores.fallbacks == 0
    server.kill()
    answers = [await decide(stores, "k") for _ in range(4)]
    # Memory buckets, same limit: a fresh burst of 3, then limited.
    assert [getattr(d, "allowed", None) for d in answers] == [True, True, True, False]
    assert stores.fallbacks == 4 and stores.store_errors == 4
    assert stores.redis is not None and stores.redis.breaker.state is State.OPEN
    assert stores.redis.errors == 2  # the breaker opened after 2: no more calls
    assert stores.redis.rejected == 2


async def test_killed_fail_closed_is_unavailable(
    setup: tuple[RedisServer, RateLimitStores],
) -> None:
    server, stores = setup
    server.kill()
    assert [await decide(stores, "k", fail_open=False) for _ in range(3)] == [None] * 3
    assert stores.fallbacks == 0 and stores.store_errors == 3


async def test_open_breaker_answers_without_waiting(
    setup: tuple[RedisServer, RateLimitStores],
) -> None:
    server, stores = setup
    server.signal(signal.SIGSTOP)
    for _ in range(2):
        await decide(stores, "k")
    assert stores.redis is not None and stores.redis.breaker.state is State.OPEN
    future = stores.redis.take([Check("k", LIMIT, 1)])
    assert future.done()  # failed on the spot, no round trip, no timeout
    with pytest.raises(Exception, match="circuit open"):
        future.result()


async def test_paused_redis_is_decided_within_the_timeout_then_shared_again(
    setup: tuple[RedisServer, RateLimitStores], clock: FakeClock
) -> None:
    server, stores = setup
    assert stores.redis is not None
    await decide(stores, "k")  # connected and the script loaded
    server.signal(signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    started = loop.time()
    d = await decide(stores, "k")
    assert d is not None and loop.time() - started < TIMEOUT_S + 0.1
    await decide(stores, "k")
    assert stores.redis.breaker.state is State.OPEN
    server.signal(signal.SIGCONT)
    clock.advance(1.0)  # the backoff is over: the next batch is the probe
    calls = stores.redis.calls
    fallbacks = stores.fallbacks
    d = await decide(stores, "k")
    assert stores.redis.breaker.state is State.CLOSED
    assert stores.redis.calls == calls + 1 and stores.fallbacks == fallbacks
    # Shared state again: the Redis bucket kept its count from before the pause (2 left),
    # less what the timed-out calls took when the server ran them after SIGCONT.
    assert getattr(d, "remaining", None) in (0, 1)


async def test_restarted_redis_is_used_again_by_itself(
    setup: tuple[RedisServer, RateLimitStores], clock: FakeClock
) -> None:
    server, stores = setup
    assert stores.redis is not None
    await decide(stores, "k")
    server.kill()
    for _ in range(2):
        await decide(stores, "k")
    clock.advance(1.0)
    await decide(stores, "k")  # the probe fails: Redis is still down
    assert stores.redis.breaker.state is State.OPEN
    assert stores.redis.breaker.backoff_s == 2.0
    server.start()  # same port, empty (the script must be loaded again)
    clock.advance(2.0)
    d = await decide(stores, "k")
    assert stores.redis.breaker.state is State.CLOSED
    assert getattr(d, "remaining", None) == 2  # a fresh Redis bucket


# --- the timeout bounds each request's wait, not each call's ---------------------------


def single_slot_store(server: RedisServer, clock: FakeClock, timeout_ms: int) -> RedisStore:
    settings = RedisSettings.model_validate(
        {"url": server.url, "timeout": f"{timeout_ms}ms", "max_in_flight": 1}
    )
    return RedisStore.from_settings(settings, Breaker(failures=5, clock=clock))


async def test_a_check_queued_behind_a_hung_call_keeps_its_own_deadline(
    redis_factory: Callable[[], RedisServer], clock: FakeClock
) -> None:
    # Before: the queued check waited for the slot, then a whole timeout more (~2x).
    server = redis_factory()
    store = single_slot_store(server, clock, timeout_ms=200)
    await store.take([Check("warm", LIMIT, 1)])
    server.signal(signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    first = store.take([Check("a", LIMIT, 1)])
    await asyncio.sleep(0.1)  # the first call is out, holding the only slot
    queued_at = loop.time()
    second = store.take([Check("b", LIMIT, 1)])
    with pytest.raises(StoreUnavailable):
        await first
    with pytest.raises(StoreUnavailable):
        await second
    waited = loop.time() - queued_at
    assert waited < 0.2 + 0.04, f"the queued check waited {waited * 1000:.0f} ms"
    assert store.errors == 2 and store.expired == 0
    await store.close()


async def test_a_check_whose_timeout_ran_out_in_the_queue_is_not_sent(
    redis_factory: Callable[[], RedisServer], clock: FakeClock
) -> None:
    server = redis_factory()
    store = single_slot_store(server, clock, timeout_ms=50)
    await store.take([Check("warm", LIMIT, 1)])
    server.signal(signal.SIGSTOP)
    first = store.take([Check("a", LIMIT, 1)])
    await asyncio.sleep(0)  # flushed: the first call holds the only slot
    second = store.take([Check("b", LIMIT, 1)])
    time.sleep(0.12)  # noqa: ASYNC251 - event-loop lag on purpose: both deadlines pass
    for future in (first, second):
        with pytest.raises(StoreUnavailable):
            await future
    assert (store.calls, store.errors, store.expired) == (2, 1, 1)  # warm-up, first
    assert store.breaker.consecutive_failures == 1  # the expired check never reached Redis
    await store.close()


async def test_closing_the_store_fails_the_checks_in_flight(
    redis_factory: Callable[[], RedisServer], clock: FakeClock
) -> None:
    server = redis_factory()
    store = single_slot_store(server, clock, timeout_ms=5000)
    await store.take([Check("warm", LIMIT, 1)])
    server.signal(signal.SIGSTOP)
    future = store.take([Check("a", LIMIT, 1)])
    await asyncio.sleep(0.01)  # the call is out, waiting on the paused server
    await store.close()
    with pytest.raises(StoreUnavailable, match="store closed"):
        await asyncio.wait_for(future, BOUND_S)
