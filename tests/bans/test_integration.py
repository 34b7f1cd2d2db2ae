"""Bans shared by two `python -m gateway run` processes through a real redis-server.

A client blocked three times by gateway A is banned there at once and, within the
propagation delay (`bans.sync_interval` + a round trip), by gateway B, which never saw
it misbehave; the admin API of either lists the ban, and a lift at B frees the client
at both. Polling here waits for other processes (there is no clock to move), with a
deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.redis_server import RedisServer
from tests.support import (
    GatewayProcess,
    free_port,
    gateway_config,
    serve_app,
    upstream_app,
    write_config,
)

SYNC_S = 0.2
ATTACK = "/api/items?id=1%27%20or%20%271%27%3D%271"


@pytest.fixture
async def up() -> AsyncIterator[int]:
    async with serve_app(upstream_app("up")) as port:
        yield port


@pytest.fixture
async def pair(
    tmp_path: Path, up: int, redis_server: RedisServer
) -> AsyncIterator[list[GatewayProcess]]:
    prefix = f"it{uuid.uuid4().hex[:10]}:"
    procs: list[GatewayProcess] = []
    try:
        for i in range(2):
            port, admin = free_port(), free_port()
            cfg = gateway_config(
                port=port,
                admin_port=admin,
                upstreams={"up": [f"http://127.0.0.1:{up}"]},
                routes=[{"name": "api", "match": {"path": {"prefix": "/api"}},
                         "upstream": "up", "screening": {}}],
            )  # fmt: skip
            cfg["redis"] = {"url": redis_server.url, "key_prefix": prefix}
            cfg["bans"] = {"after_blocks": 3, "ban_for": "15m",
                           "sync_interval": f"{SYNC_S * 1000:g}ms"}  # fmt: skip
            path = tmp_path / f"gateway-{i}.yaml"
            write_config(path, cfg)
            procs.append(GatewayProcess(path, port, admin))
        await asyncio.gather(*(g.wait_ready() for g in procs))
        yield procs
    finally:
        await asyncio.gather(*(asyncio.to_thread(g.stop) for g in procs))


async def status(s: aiohttp.ClientSession, url: str) -> int:
    async with s.get(url) as r:
        await r.read()
        return r.status


async def until_status(s: aiohttp.ClientSession, url: str, want: int, within_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await status(s, url) == want:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered {want} within {within_s:g} s")


async def test_ban_shared_between_two_gateways(pair: list[GatewayProcess]) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as s:
        assert await status(s, b.url + "/api/items") == 200
        assert [await status(s, a.url + ATTACK) for _ in range(3)] == [403] * 3
        async with s.get(a.url + "/api/items") as r:
            body = await r.json()
            assert r.status == 403 and r.headers["Retry-After"] == "900"
            assert body["error"] == "banned" and body["reason"] == "ban"
            assert body["request_id"]
        took = await until_status(s, b.url + "/api/items", 403, 2.0)
        print(f"\nban reached the second gateway in {took * 1000:.0f} ms (sync {SYNC_S:g} s)")
        async with s.get(f"http://127.0.0.1:{b.admin_port}/bans") as r:
            (row,) = (await r.json())["bans"]
        assert row["ip"] == "127.0.0.1" and row["count"] == 1 and row["shared"] is True
        assert row["reason"] == "screening on route api"
        async with s.delete(f"http://127.0.0.1:{b.admin_port}/bans/127.0.0.1") as r:
            assert r.status == 200
        assert await status(s, b.url + "/api/items") == 200
        await until_status(s, a.url + "/api/items", 200, 2.0)
        async with s.get(f"http://127.0.0.1:{a.admin_port}/bans") as r:
            assert await r.json() == {"bans": []}
