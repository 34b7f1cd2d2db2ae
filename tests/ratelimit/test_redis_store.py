"""The Lua script and the batching store against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.config.ratelimit_model import RedisSettings
from gateway.store.breaker import Breaker
from gateway.store.bucket import Limit
from gateway.store.redis_store import Check, RedisStore, _cluster_key
from gateway.store.stores import RateLimitStores
from tests.ratelimit.conftest import FakeClock, RedisServer


def make_store(url: str, prefix: str, clock: FakeClock, **kw: object) -> RedisStore:
    settings = RedisSettings.model_validate({"url": url, "key_prefix": prefix, **kw})
    return RedisStore.from_settings(settings, Breaker(clock=clock))


@pytest.fixture
async def store(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> AsyncIterator[RedisStore]:
    s = make_store(redis_server.url, prefix, clock, timeout="1s")
    yield s
    await s.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def server_time(client: Redis) -> float:
    sec, usec = await client.time()
    return float(sec) + usec / 1e6


async def test_admitted_over_a_window_is_rate_times_time_plus_burst(
    store: RedisStore, raw: Redis
) -> None:
    # Real server time cannot be faked: a short real window, asked far above the rate.
    limit = Limit(rate=200.0, burst=10)
    start = await server_time(raw)
    admitted = 0
    while await server_time(raw) - start < 0.5:
        # 20 asks per call: far above the rate even when a loaded machine makes each
        # round trip slow (one ask per call could fall below 200/s and admit too few).
        decisions = await store.take([Check("k", limit, 1)] * 20)
        admitted += sum(d.allowed for d in decisions)
    elapsed = await server_time(raw) - start
    expected = limit.burst + limit.rate * elapsed
    assert abs(admitted - expected) <= 0.05 * expected


async def test_two_hosts_with_skewed_clocks_agree(redis_server: RedisServer, prefix: str) -> None:
    # Each "host" has its own clock, an hour apart; the buckets live on server time.
    hosts = [make_store(redis_server.url, prefix, FakeClock(start)) for start in (0.0, 3600.0)]
    limit = Limit(rate=1 / 3600, burst=5)
    answers = []
    for i in range(8):
        (d,) = await hosts[i % 2].take([Check("shared", limit, 1)])
        answers.append((d.allowed, d.remaining))
    assert answers == [(True, 4), (True, 3), (True, 2), (True, 1), (True, 0)] + [(False, 0)] * 3
    for h in hosts:
        await h.close()


async def test_keys_expire_when_full_again(store: RedisStore, raw: Redis, prefix: str) -> None:
    (d,) = await store.take([Check("e", Limit(rate=10.0, burst=10), 3)])
    assert d.reset_s == pytest.approx(0.3)
    assert 250 < await raw.pttl(f"{prefix}e") <= 300
    (d,) = await store.take([Check("free", Limit(rate=10.0, burst=10), 0)])
    assert (d.allowed, d.remaining, d.reset_s) == (True, 10, 0.0)
    assert await raw.exists(f"{prefix}free") == 0  # a full bucket is no key at all


async def test_a_batch_of_mixed_keys_is_one_call(store: RedisStore) -> None:
    small, big = Limit(rate=1.0, burst=2), Limit(rate=100.0, burst=100)
    checks = [
        Check("a", small, 1),
        Check("b", big, 40),
        Check("a", small, 1),
        Check("a", small, 1),
        Check("c", small, 5),
    ]
    ds = await store.take(checks)
    assert [(d.allowed, d.remaining) for d in ds] == [
        (True, 1),
        (True, 60),
        (True, 0),
        (False, 0),
        (False, 2),
    ]
    assert ds[3].retry_after_s == pytest.approx(1.0, abs=0.01)
    assert ds[4].retry_after_s == float("inf")  # cost above burst: never
    assert store.calls == 1 and store.keys == 5


async def test_requests_in_one_tick_share_one_call(store: RedisStore) -> None:
    limit = Limit(rate=1.0, burst=50)
    results = await asyncio.gather(
        *(store.take([Check(f"k{i % 7}", limit, 1)]) for i in range(100))
    )
    assert all(r[0].allowed for r in results)
    assert store.calls == 1 and store.keys == 100


async def test_batches_are_split_at_max_batch(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    store = make_store(redis_server.url, prefix, clock, max_batch=4, max_in_flight=1)
    limit = Limit(rate=1.0, burst=50)
    # Two checks per request are never split; 5 requests -> batches of 2 + 2 + 1 requests.
    results = await asyncio.gather(
        *(store.take([Check("x", limit, 1), Check(f"y{i}", limit, 1)]) for i in range(5))
    )
    assert sorted(r[0].remaining for r in results) == [45, 46, 47, 48, 49]
    assert store.calls == 3
    await store.close()


async def test_script_flushed_is_loaded_again(store: RedisStore, raw: Redis) -> None:
    await store.take([Check("n", Limit(1.0, 5), 1)])
    await raw.script_flush()
    (d,) = await store.take([Check("n", Limit(1.0, 5), 1)])
    assert (d.allowed, d.remaining) == (True, 3)


def test_cluster_keys_in_a_tag_group_share_a_slot() -> None:
    keys = [f"route:policy:10.0.0.{i}" for i in range(500)]
    slots: dict[str, set[int]] = {}
    for k in keys:
        full = _cluster_key("gw:rl:", k)
        tag = full[len("gw:rl:") :].split("}")[0]
        slots.setdefault(tag, set()).add(key_slot(full.encode()))
    assert all(len(s) == 1 for s in slots.values())
    assert len(slots) == 64


async def test_cluster_mode_splits_by_tag_and_keeps_order(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    # A standalone server runs the per-slot calls just as a cluster would.
    # 20 per-slot calls open their connections concurrently: a 50 ms budget is about
    # the machine's speed, not the grouping this test checks.
    store = RedisStore(
        Redis.from_url(redis_server.url),
        Breaker(clock=clock),
        key_prefix=prefix,
        cluster=True,
        timeout_s=2.0,
    )
    limit = Limit(rate=1.0, burst=100)
    checks = [Check(f"c{i}", limit, i + 1) for i in range(20)]
    ds = await store.take(checks)
    assert [d.remaining for d in ds] == [100 - (i + 1) for i in range(20)]
    assert store.calls == 1
    await store.close()


async def test_stores_for_config_reuse(redis_server: RedisServer, prefix: str) -> None:
    from gateway.config.load import validate_data

    def config(timeout: str) -> dict[str, object]:
        return {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {},
            "routes": [],
            "redis": {"url": redis_server.url, "key_prefix": prefix, "timeout": timeout},
        }

    first = RateLimitStores.for_config(validate_data(config("50ms")))
    first.memory.take("m", Limit(1.0, 5), 1)
    counters = first.counters("r", "p")
    assert RateLimitStores.for_config(validate_data(config("50ms")), first) is first
    second = RateLimitStores.for_config(validate_data(config("80ms")), first)
    assert second is not first and second.memory is first.memory
    assert second.counters("r", "p") is counters
    assert second.redis is not None and second.redis.timeout_s == 0.08
    await first.close()
    await second.close()
