"""The rate limit filter called directly with real Exchanges, memory and Redis stores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from gateway.config.load import validate_data
from gateway.config.model import Config
from gateway.exchange import Exchange, Reply
from gateway.filters.ratelimit import RateLimitFilter, build_ratelimit_filter
from gateway.routing import Route
from gateway.store.stores import RateLimitStores
from tests.ratelimit.conftest import FakeClock, RedisServer


def config(policies: list[dict[str, Any]], redis: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "upstreams": {"u": {"endpoints": ["http://127.0.0.1:1"]}},
        "routes": [{"name": "api", "upstream": "u", "rate_limits": policies}],
    }
    if redis is not None:
        data["redis"] = redis
    return validate_data(data)


def build(cfg: Config, stores: RateLimitStores) -> RateLimitFilter:
    f = build_ratelimit_filter(cfg.routes[0], stores)
    assert f is not None
    return f


def exchange(
    cfg: Config, method: str = "GET", client_ip: str = "192.0.2.1", **headers: str
) -> Exchange:
    return Exchange(
        method=method,
        path="/",
        query="",
        headers=CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}),
        host="h",
        scheme="http",
        client_ip=client_ip,
        client_port=1,
        request_id="req-1",
        route=Route(cfg.routes[0]),
        body=None,
        content_length=None,
    )


async def upstream(ex: Exchange) -> Reply:
    return Reply(200, body=b"ok")


def memory_stores(clock: FakeClock) -> RateLimitStores:
    return RateLimitStores(clock=clock)


async def statuses(f: RateLimitFilter, make: Callable[[], Exchange], n: int) -> list[int]:
    return [(await f(make(), upstream)).status for _ in range(n)]


# --- header fields: the draft's own example values ------------------------------------


async def test_headers_match_the_draft_examples(clock: FakeClock) -> None:
    # draft-ietf-httpapi-ratelimit-headers-11 3.2: RateLimit-Policy: "default";q=100;w=10
    cfg = config([{"name": "default", "rate": "10/s", "burst": 100}])
    reply = await build(cfg, memory_stores(clock))(exchange(cfg), upstream)
    assert reply.headers["RateLimit-Policy"] == '"default";q=100;w=10'
    # 4.2: RateLimit: "default";r=50;t=30 -- 50 left, full again in 30 s.
    cfg = config([{"name": "default", "rate": "60/min", "burst": 80, "cost": {"default": 30}}])
    reply = await build(cfg, memory_stores(clock))(exchange(cfg), upstream)
    assert reply.headers["RateLimit"] == '"default";r=50;t=30'
    # 3.2: "permin";q=50;w=60,"perhr";q=1000;w=3600 -- the same list, serialised per
    # RFC 8941 4.1.1 (a "," then one SP between members).
    cfg = config([{"name": "permin", "rate": "50/min"}, {"name": "perhr", "rate": "1000/h"}])
    reply = await build(cfg, memory_stores(clock))(exchange(cfg), upstream)
    assert reply.headers["RateLimit-Policy"] == '"permin";q=50;w=60, "perhr";q=1000;w=3600'
    assert reply.headers["RateLimit"] == '"permin";r=49;t=2, "perhr";r=999;t=4'


async def test_limited_answers_429_with_json_retry_after_and_fields(clock: FakeClock) -> None:
    cfg = config([{"name": "per-ip", "rate": "1/s", "burst": 2}])
    f = build(cfg, memory_stores(clock))
    assert await statuses(f, lambda: exchange(cfg), 2) == [200, 200]
    reply = await f(exchange(cfg), upstream)
    assert reply.status == 429
    assert orjson.loads(reply.body) == {
        "error": "rate_limited",
        "message": "rate limit 'per-ip' exceeded; retry in 1 s",
        "request_id": "req-1",
    }
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Retry-After"] == "1"
    assert reply.headers["RateLimit-Policy"] == '"per-ip";q=2;w=2'
    assert reply.headers["RateLimit"] == '"per-ip";r=0;t=1'
    clock.advance(1.0)
    assert (await f(exchange(cfg), upstream)).status == 200
    c = f.policies[0].counters
    assert (c.allowed, c.limited, c.shadow_limited) == (3, 1, 0)


async def test_retry_after_rounds_up_and_takes_the_longest_wait(clock: FakeClock) -> None:
    cfg = config(
        [
            {"name": "fast", "rate": "10/s", "burst": 1},
            {"name": "slow", "rate": "1/min", "burst": 1},
        ]
    )
    f = build(cfg, memory_stores(clock))
    await f(exchange(cfg), upstream)
    clock.advance(0.5)
    reply = await f(exchange(cfg), upstream)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "60"  # 59.5 s, rounded up
    assert reply.headers["RateLimit"] == '"fast";r=0;t=1, "slow";r=0;t=60'
    assert b"'slow'" in reply.body and b"'fast'" not in reply.body


async def test_headers_can_be_switched_off(clock: FakeClock) -> None:
    cfg = config([{"name": "p", "rate": "1/s", "burst": 1, "headers": False}])
    f = build(cfg, memory_stores(clock))
    ok, limited = (await f(exchange(cfg), upstream)), (await f(exchange(cfg), upstream))
    assert "RateLimit" not in ok.headers and "RateLimit-Policy" not in ok.headers
    assert limited.status == 429 and limited.headers["Retry-After"] == "1"
    assert "RateLimit" not in limited.headers


async def test_shadow_mode_counts_and_never_blocks(clock: FakeClock) -> None:
    cfg = config([{"name": "p", "rate": "1/s", "burst": 2, "mode": "shadow"}])
    f = build(cfg, memory_stores(clock))
    replies = [await f(exchange(cfg), upstream) for _ in range(5)]
    assert [r.status for r in replies] == [200] * 5
    assert all("RateLimit" not in r.headers for r in replies)
    c = f.policies[0].counters
    assert (c.allowed, c.limited, c.shadow_limited) == (2, 0, 3)


async def test_keys_are_per_client(clock: FakeClock) -> None:
    cfg = config([{"name": "p", "rate": "1/s", "burst": 1}])
    f = build(cfg, memory_stores(clock))
    assert await statuses(f, lambda: exchange(cfg, client_ip="192.0.2.1"), 2) == [200, 429]
    assert await statuses(f, lambda: exchange(cfg, client_ip="192.0.2.2"), 1) == [200]


async def test_missing_key_is_rejected_before_spending(clock: FakeClock) -> None:
    cfg = config(
        [
            {"name": "ip", "rate": "1/s", "burst": 1},
            {"name": "key", "rate": "1/s", "key": [{"header": "X-API-Key"}]},
        ]
    )
    f = build(cfg, memory_stores(clock))
    reply = await f(exchange(cfg), upstream)
    assert reply.status == 400
    assert orjson.loads(reply.body) == {
        "error": "rate_limit_key_missing",
        "message": "this route needs the X-API-Key header (rate limit 'key')",
        "request_id": "req-1",
    }
    assert (await f(exchange(cfg, X_API_Key="k1"), upstream)).status == 200  # ip not spent


async def test_fallback_key_is_one_shared_bucket(clock: FakeClock) -> None:
    cfg = config(
        [
            {
                "name": "key",
                "rate": "1/s",
                "burst": 2,
                "key": [{"header": "X-API-Key"}],
                "missing_key": {"fallback": "anonymous"},
            }
        ]
    )
    f = build(cfg, memory_stores(clock))
    anon = [await f(exchange(cfg, client_ip=f"192.0.2.{i}"), upstream) for i in range(3)]
    assert [r.status for r in anon] == [200, 200, 429]
    assert (await f(exchange(cfg, X_API_Key="k1"), upstream)).status == 200
    assert (await f(exchange(cfg, X_API_Key=""), upstream)).status == 429  # empty = missing


async def test_combined_key_and_cookie(clock: FakeClock) -> None:
    cfg = config(
        [{"name": "p", "rate": "1/s", "burst": 1, "key": ["client_ip", {"cookie": "session"}]}]
    )
    f = build(cfg, memory_stores(clock))

    def with_cookie(ip: str, cookie: str) -> Callable[[], Exchange]:
        return lambda: exchange(cfg, client_ip=ip, Cookie=cookie)

    assert await statuses(f, with_cookie("192.0.2.1", "a=1; session=s1"), 2) == [200, 429]
    assert await statuses(f, with_cookie("192.0.2.1", "session=s2"), 1) == [200]
    assert await statuses(f, with_cookie("192.0.2.9", "session=s1"), 1) == [200]
    assert (await f(exchange(cfg, Cookie="a=1"), upstream)).status == 400
    key = f.policies[0].key(with_cookie("192.0.2.1", "session=s1")())
    assert key is not None and key.startswith("api:p:192.0.2.1|") and "s1" not in key


async def test_cost_per_method(clock: FakeClock) -> None:
    cfg = config([{"name": "p", "rate": "5/s", "cost": {"methods": {"POST": 5, "OPTIONS": 0}}}])
    f = build(cfg, memory_stores(clock))
    assert (await f(exchange(cfg, method="POST"), upstream)).status == 200
    assert (await f(exchange(cfg, method="OPTIONS"), upstream)).status == 200
    reply = await f(exchange(cfg, method="GET"), upstream)
    assert reply.status == 429 and reply.headers["RateLimit"] == '"p";r=0;t=1'
    clock.advance(0.2)
    assert (await f(exchange(cfg, method="GET"), upstream)).status == 200


def test_build_and_repr(clock: FakeClock) -> None:
    cfg = config([{"name": "p", "rate": "20/s", "key": ["client_ip", {"header": "X-K"}]}])
    stores = memory_stores(clock)
    f = build(cfg, stores)
    assert repr(f) == (
        "<RateLimitFilter route=api policies=[<policy p 20/s burst=20"
        " key=client_ip+header:X-K memory>]>"
    )
    assert build_ratelimit_filter(config([]).routes[0], stores) is None
    with pytest.raises(ValueError, match="store 'redis' without a redis section"):
        bad = config([{"name": "p", "rate": "1/s", "store": "redis"}], redis={})
        build_ratelimit_filter(bad.routes[0], stores)


# --- with Redis -------------------------------------------------------------------------


async def test_two_processes_share_the_redis_limit(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    cfg = config(
        [{"name": "p", "rate": "1/min", "burst": 4}],
        redis={"url": redis_server.url, "key_prefix": prefix, "timeout": "1s"},
    )
    workers = [RateLimitStores(cfg.redis, clock=clock) for _ in range(2)]
    filters = [build(cfg, s) for s in workers]
    replies = await asyncio.gather(*(filters[i % 2](exchange(cfg), upstream) for i in range(10)))
    assert sorted(r.status for r in replies) == [200] * 4 + [429] * 6
    assert all(s.fallbacks == 0 for s in workers)
    for s in workers:
        await s.close()


async def test_redis_policies_of_a_route_go_in_one_call(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    cfg = config(
        [{"name": "a", "rate": "10/s"}, {"name": "b", "rate": "100/min"},
         {"name": "local", "rate": "5/s", "store": "memory"}],
        redis={"url": redis_server.url, "key_prefix": prefix, "timeout": "1s"},
    )  # fmt: skip
    stores = RateLimitStores(cfg.redis, clock=clock)
    f = build(cfg, stores)
    reply = await f(exchange(cfg), upstream)
    assert reply.headers["RateLimit"] == '"a";r=9;t=1, "b";r=99;t=1, "local";r=4;t=1'
    assert stores.redis is not None and (stores.redis.calls, stores.redis.keys) == (1, 2)
    await stores.close()


async def test_redis_down_fail_open_and_fail_closed(
    redis_factory: Callable[[], RedisServer], clock: FakeClock
) -> None:
    server = redis_factory()
    redis = {"url": server.url, "timeout": "50ms"}
    cfg = config(
        [{"name": "open", "rate": "1/s", "burst": 1},
         {"name": "closed", "rate": "1/s", "burst": 5, "on_store_error": "closed"}],
        redis=redis,
    )  # fmt: skip
    stores = RateLimitStores(cfg.redis, clock=clock)
    f = build(cfg, stores)
    assert (await f(exchange(cfg), upstream)).status == 200
    server.kill()
    reply = await asyncio.wait_for(f(exchange(cfg), upstream), 0.5)
    assert reply.status == 503
    assert orjson.loads(reply.body)["error"] == "rate_limit_unavailable"
    assert [p.counters.unavailable for p in f.policies] == [0, 1]
    assert stores.fallbacks == 1  # the open policy was decided in memory

    only_open = config([{"name": "open", "rate": "1/s", "burst": 1}], redis=redis)
    g = build(only_open, stores)
    clock.advance(1.0)  # the 503 request spent the memory bucket's token; refill it
    statuses_ = [(await asyncio.wait_for(g(exchange(only_open), upstream), 0.5)).status
                 for _ in range(2)]  # fmt: skip
    assert statuses_ == [200, 429]  # per-process buckets, same limit
    await stores.close()
