"""A gateway that starts, reloads and stops while its Redis is down or paused.

Start-up reads the rollout state from Redis and stop closes every Redis client, so
both meet a dead or paused server sooner or later. Neither may hang: the gateway is
ready and answers per policy with Redis down or paused from the start, uses Redis by
itself once it is back, and a SIGTERM while Redis is paused ends the process within
the drain time it has (`server.shutdown_timeout`, 30 s by default, nothing in
flight here) plus the Redis timeout, not never.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.redis_faults.conftest import (
    HUNG_S,
    FaultyRedis,
    StartGateway,
    get,
    limited_through_redis,
    until,
)

STOP_S = 10.0  # a stop with nothing in flight; the drain waits for nothing

BEFORE_START: dict[str, tuple[Callable[[FaultyRedis], None], Callable[[FaultyRedis], None]]] = {
    "down": (FaultyRedis.kill, FaultyRedis.start),
    "paused": (FaultyRedis.pause, FaultyRedis.resume),
}


@pytest.mark.parametrize("state", list(BEFORE_START))
async def test_starts_serves_per_policy_uses_redis_once_back_stops_when_paused(
    state: str, faulty_redis: FaultyRedis, start_gateway: StartGateway
) -> None:
    begin, end = BEFORE_START[state]
    begin(faulty_redis)
    started = time.monotonic()
    gw = await start_gateway()
    print(f"\nredis {state}: the gateway was ready in {time.monotonic() - started:.2f} s")
    timeout = aiohttp.ClientTimeout(total=HUNG_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        for i in range(20):
            ip = f"10.7.0.{i}"
            assert (await get(s, f"{gw.url}/open/x", ip)).status == 200
            r = await get(s, f"{gw.url}/closed/x", ip)
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await get(s, f"{gw.url}/svc/x", ip)).status == 200
        end(faulty_redis)
        took = await until("limits through redis", lambda: limited_through_redis(s, gw, "open"), gw)
        await until("closed admits", lambda: limited_through_redis(s, gw, "closed"), gw)
        print(f"redis {state}: limits through redis {took:.2f} s after it was back")
        # Stop while Redis is paused: its connections are open, every store has one.
        faulty_redis.pause()
        for i in range(10):
            await get(s, f"{gw.url}/open/x", f"10.8.0.{i}")
    started = time.monotonic()
    gw.proc.signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(gw.proc.proc.wait, STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {STOP_S:g} s after SIGTERM\n{gw.log()[-3000:]}"
        ) from None
    took = time.monotonic() - started
    print(f"SIGTERM with redis paused: exited with {gw.proc.proc.returncode} in {took:.2f} s")
    assert gw.proc.proc.returncode == 0, gw.log()[-3000:]
