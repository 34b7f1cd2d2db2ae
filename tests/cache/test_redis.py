"""The Redis store: shared by gateway processes, TTLs, and what happens when Redis is gone.

Real redis-server processes (tests/redis_server.py): the session's shared one, or a
dedicated one (`redis_factory`) for the tests that kill or pause it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.cache.redis_store import RedisCacheStore
from tests.cache.support import FakeClock, get, start
from tests.conftest import GatewayFactory
from tests.redis_server import RedisServer
from tests.support import GatewayProcess, free_port, gateway_config, write_config


async def redis_keys(url: str, prefix: str) -> dict[str, int]:
    """name (after the prefix, up to the first NUL) -> TTL seconds."""
    client = Redis.from_url(url)
    try:
        out = {}
        async for name in client.scan_iter(match=prefix + "*"):
            out[name.decode()[len(prefix) :].partition("\x00")[0]] = await client.ttl(name)
        return out
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("cc", "keep_stale", "ttl_s"),
    [
        ("max-age=60", "0s", 60),
        ("max-age=60, stale-while-revalidate=30", "0s", 90),
        ("max-age=60, stale-if-error=300, stale-while-revalidate=30", "0s", 360),
        ("max-age=60, stale-if-error=300, must-revalidate", "0s", 60),
        ("max-age=60", "10m", 660),
    ],
    ids=["fresh", "swr", "sie-longest", "must-revalidate", "keep-stale"],
)
async def test_entries_expire_after_freshness_and_stale_windows(
    gateway: GatewayFactory,
    up: int,
    redis_server: RedisServer,
    cc: str,
    keep_stale: str,
    ttl_s: int,
) -> None:
    prefix = f"gwt:{uuid.uuid4().hex[:12]}:"
    redis = {
        "url": redis_server.url,
        "key_prefix": prefix,
        "keep_stale": keep_stale,
        "timeout": "2s",
    }
    store = {"cache_store": {"backend": "redis", "redis": redis}}
    gw, _ = await start(gateway, up, {"tags_header": "Surrogate-Key"}, **store)
    await get(gw, id="a", cc=cc, tags="t1")
    keys = await redis_keys(redis_server.url, prefix)
    url = next(k for k in keys if k.startswith("e:"))[2:]
    assert url.startswith("127.0.0.1/r?") and "id=a" in url
    assert set(keys) == {"e:" + url, "v:" + url, "t:t1"}
    assert all(ttl_s - 2 <= t <= ttl_s for t in keys.values()), keys


@pytest.mark.parametrize("outage", ["killed", "paused"])
async def test_redis_down_bypasses_the_cache(
    gateway: GatewayFactory,
    up: int,
    hits: Counter[str],
    redis_factory: Callable[[], RedisServer],
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    server = redis_factory()
    gw, _ = await start(gateway, up, backend="redis", redis_url=server.url, redis_timeout="0.5s")
    store = gw.worker.runtime.cache
    assert isinstance(store, RedisCacheStore)
    breaker_clock = FakeClock()
    store.breaker.clock = breaker_clock
    await get(gw, id="a", cc="max-age=60")
    _, h, _ = await get(gw, id="a", cc="max-age=60")
    assert h["Cache-Status"].startswith("gateway; hit")
    server.kill() if outage == "killed" else server.pause()
    caplog.set_level(logging.WARNING, "gateway.cache.redis_store")
    for i in range(5):  # each answered by the upstream, none hangs
        status, h, body = await asyncio.wait_for(get(gw, id="a", cc="max-age=60"), 10)
        assert (status, body) == (200, f"a:{2 + i}:".encode())
        assert h["Cache-Status"].startswith("gateway; fwd=") and "miss" in h["Cache-Status"]
    assert store.errors >= 1 and store.errors + store.bypassed >= 5
    lines = [r for r in caplog.records if "cache bypassed" in r.getMessage()]
    assert len(lines) == 1  # rate limited: one line per LOG_EVERY_S
    if outage == "paused":
        server.resume()
    else:
        server.start()
    breaker_clock.now += 60  # past the breaker's backoff: the next call is its probe
    await get(gw, id="b", cc="max-age=60")
    _, h, _ = await get(gw, id="b", cc="max-age=60")
    assert h["Cache-Status"].startswith("gateway; hit")


async def until_stored(url: str, prefix: str, timeout_s: float = 10.0) -> None:
    """Poll Redis until a gateway process's entry write landed (it follows the response)."""
    deadline = time.monotonic() + timeout_s
    while not any(k.startswith("e:") for k in await redis_keys(url, prefix)):
        assert time.monotonic() < deadline, "no entry written"
        await asyncio.sleep(0.02)  # another process's write: polled, as wait_ready does


async def admin_purge(admin_port: int, body: dict[str, str]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{admin_port}/api/cache/purge", json=body) as r,
    ):
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def fetch(url: str) -> tuple[str, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.headers["Cache-Status"], await r.read()


async def test_two_gateway_processes_share_entries_and_purges(
    tmp_path: Path, up: int, hits: Counter[str], redis_server: RedisServer
) -> None:
    prefix = f"gwt:{uuid.uuid4().hex[:12]}:"
    procs = []
    try:
        for name in ("a", "b"):
            port, admin = free_port(), free_port()
            cfg = gateway_config(
                port=port,
                admin_port=admin,
                upstreams={"up": [f"http://127.0.0.1:{up}"]},
                routes=[{"name": "api", "upstream": "up", "cache": {}}],
            )
            redis = {"url": redis_server.url, "key_prefix": prefix, "timeout": "2s"}
            cfg["cache_store"] = {"backend": "redis", "redis": redis}
            path = tmp_path / f"{name}.yaml"
            write_config(path, cfg)
            procs.append(GatewayProcess(path, port, admin))
        for p in procs:
            await p.wait_ready()
        a, b = procs
        q = "/r?id=s&cc=max-age%3D60&tags=group"
        status_a, body_a = await fetch(a.url + q)
        assert "fwd=miss" in status_a and "stored" in status_a
        await until_stored(redis_server.url, prefix)
        status_b, body_b = await fetch(b.url + q)
        assert status_b.startswith("gateway; hit") and body_b == body_a
        assert hits["s"] == 1
        purged = await admin_purge(a.admin_port, {"tag": "group"})
        assert purged["purged"] == 1
        status_b, _ = await fetch(b.url + q)
        assert "miss" in status_b and hits["s"] == 2  # vary-miss: the Vary record stays
        await until_stored(redis_server.url, prefix)  # B's new copy
        purged = await admin_purge(b.admin_port, {"key": "127.0.0.1" + q})
        assert purged["purged"] == 1
        status_a, _ = await fetch(a.url + q)
        assert "miss" in status_a and hits["s"] == 3
    finally:
        for p in procs:
            p.stop()
