"""Redis killed, paused, restarted and flushed under load: every feature per its policy.

One gateway process (`conftest.config`: rate limits failing open and closed, shared
bans, rollout state, dedup failing open and closed, a Redis response cache, all on
one redis-server) serves eight closed-loop clients while the test abuses its Redis.
For each fault:

- every request is answered (no client waited `HUNG_S`, no connection failed), and
  quickly (`QUICK_S`, generous for a loaded 2-core box: the Redis timeouts are 50 ms
  and the breakers answer at once while open);
- each feature follows its policy: rate limits `open` answer 200/429 from the memory
  buckets and `closed` 503 `rate_limit_unavailable` while Redis is unusable; dedup
  `open` passes requests through and `closed` answers 503; the cache misses (the
  upstream answers); bans are enforced from memory and never wait on Redis; the
  rollout keeps its local state (and the routes their weights); a config reload in
  the middle of the fault completes;
- once Redis is back (`start` after a kill, SIGCONT), without touching the gateway,
  limits bite again *through Redis* (a fresh client exhausts its burst and its bucket
  is a key in Redis), fail-closed routes admit again, dedup replays and the cache
  hits again (both only through Redis), a new ban is shared again, and the rollout
  record is back in Redis.

What Redis loses, the gateway loses (README, Limitations): a restart of a Redis
without persistence, like FLUSHALL, empties every bucket (clients get a fresh
burst), drops every shared ban (each process drops it at its next sync), forgets
dedup keys (a repeat runs again) and cache entries; a ban made while Redis was
unreachable is enforced by the process that made it only, and is not re-sent. The
rollout record is written back by the next tick (`Rollout.sync`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from tests.redis_faults.conftest import (
    ATTACK,
    HUNG_S,
    PREFIX,
    ROUTES,
    FaultyRedis,
    Gateway,
    Load,
    cached_through_redis,
    dedup_through_redis,
    get,
    limited_through_redis,
    load,
    replayed,
    statuses,
    until,
)

QUICK_S = 1.5  # every answer, fault or not (timeouts are 50 ms; seen: < 0.2 s); < FAULT_S
FAULT_S = 2.0  # how long Redis stays in trouble: a request hung until it ends fails QUICK_S


@dataclass(frozen=True)
class Fault:
    """One way Redis goes wrong, and what the gateway keeps through it."""

    begin: Callable[[FaultyRedis], None]
    end: Callable[[FaultyRedis], None]
    unusable: bool  # Redis cannot answer in between: fail-closed routes answer 503
    keeps_data: bool  # Redis still holds the buckets, bans and record afterwards


def _noop(r: FaultyRedis) -> None:
    pass


def _restart(r: FaultyRedis) -> None:
    r.terminate()
    r.start()


FAULTS = {
    "kill-9": Fault(FaultyRedis.kill, FaultyRedis.start, unusable=True, keeps_data=False),
    "sigstop": Fault(FaultyRedis.pause, FaultyRedis.resume, unusable=True, keeps_data=True),
    # A quick clean restart (SIGTERM closes every connection, then up again at once).
    "restart": Fault(_restart, _noop, unusable=False, keeps_data=False),
    "flushall": Fault(FaultyRedis.flushall, _noop, unusable=False, keeps_data=False),
}


async def ban(s: aiohttp.ClientSession, gw: Gateway, ip: str) -> None:
    """Two screening blocks: `ip` is banned (after_blocks: 2) by the process at once."""
    for _ in range(2):
        assert (await get(s, gw.url + ATTACK, ip)).status == 403
    assert await refused(s, gw, ip)


async def refused(s: aiohttp.ClientSession, gw: Gateway, ip: str) -> bool:
    async with s.get(f"{gw.url}/api/items", headers={"X-Forwarded-For": ip}) as r:
        body = await r.json() if r.status == 403 else {}
        return r.status == 403 and body.get("error") == "banned"


def ban_key(ip: str) -> str:
    return f"{PREFIX}bans:ban:{ip}"


ROLLOUT_KEY = f"{PREFIX}rollout:svc"


@pytest.mark.parametrize("name", list(FAULTS))
async def test_redis_fault_under_load(name: str, gateway_on: Gateway) -> None:
    fault, gw, r = FAULTS[name], gateway_on, gateway_on.redis
    timeout = aiohttp.ClientTimeout(total=HUNG_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        # Healthy: limits are Redis's, a ban is shared, the rollout record is stored.
        await until("limits through redis", lambda: limited_through_redis(s, gw, "open"), gw)
        await ban(s, gw, "203.0.113.1")
        await until("ban A shared", lambda: r.exists(ban_key("203.0.113.1")), gw)
        await until("rollout stored", lambda: r.exists(ROLLOUT_KEY), gw)
        await until("dedup through redis", lambda: dedup_through_redis(s, gw, "dopen"), gw)
        await until("cache through redis", lambda: cached_through_redis(s, gw), gw)
        old_key = uuid.uuid4().hex  # an idempotency key answered before the fault
        assert not await replayed(s, gw, "dclosed", old_key)
        assert await replayed(s, gw, "dclosed", old_key)

        async with load(gw.url) as lo:
            await asyncio.sleep(0.5)
            fault_at = time.monotonic()
            await asyncio.to_thread(fault.begin, r)
            await asyncio.sleep(0.3)
            # In trouble: bans are still enforced, a new one takes effect at once, and
            # a reload completes (its rollout sync is bounded by the Redis timeout).
            if fault.unusable:  # the last synced bans stay enforced
                assert await refused(s, gw, "203.0.113.1")
            await ban(s, gw, "203.0.113.2")
            gw.write(2)

            async def reloaded() -> bool:
                resp = await get(s, f"{gw.url}/svc/x", "10.9.9.9")
                return resp.headers.get("X-Config-Version") == "2"

            reload_s = await until("reload during the fault", reloaded, gw)
            await asyncio.sleep(max(0.0, fault_at + FAULT_S - time.monotonic()))
            back_at = time.monotonic()
            await asyncio.to_thread(fault.end, r)

            # Back: enforced through Redis again, without touching the gateway.
            took = await until(
                "limits bite through redis again",
                lambda: limited_through_redis(s, gw, "open"),
                gw,
            )
            await until("fail-closed route limits through redis again",
                        lambda: limited_through_redis(s, gw, "closed"), gw)  # fmt: skip
            await ban(s, gw, "203.0.113.3")
            await until("new ban shared again", lambda: r.exists(ban_key("203.0.113.3")), gw)
            await until("rollout record in redis again", lambda: r.exists(ROLLOUT_KEY), gw)
            await until("dedup replays through redis again",
                        lambda: dedup_through_redis(s, gw, "dopen"), gw)  # fmt: skip
            await until("fail-closed dedup replays through redis again",
                        lambda: dedup_through_redis(s, gw, "dclosed"), gw)  # fmt: skip
            await until("cache hits through redis again", lambda: cached_through_redis(s, gw), gw)
            # What Redis kept or lost: a repeat of the old key is replayed, or runs again.
            assert await replayed(s, gw, "dclosed", old_key) == fault.keeps_data
            if fault.keeps_data:
                assert await refused(s, gw, "203.0.113.1")
            else:  # Redis lost ban A: every process drops it at its next sync
                await until("lost ban dropped",
                            lambda: _not(refused(s, gw, "203.0.113.1")), gw)  # fmt: skip
            # Ban B was made in the fault; at least the process that made it enforces it.
            assert await refused(s, gw, "203.0.113.2")
            await asyncio.sleep(0.3)
        report(name, lo, fault_at, back_at, took)
        warnings = [line for line in gw.log().splitlines() if " WARNING " in line]
        loggers = sorted({line.split()[3] for line in warnings if len(line.split()) > 3})
        print(f"{name}: the reload in the fault served within {reload_s:.2f} s; "
              f"{len(warnings)} warning lines in the log ({', '.join(loggers)})")  # fmt: skip
        check(name, fault, lo, fault_at, back_at, gw)


async def _not(a: Awaitable[bool]) -> bool:
    return not await a


def report(name: str, lo: Load, fault_at: float, back_at: float, took: float) -> None:
    worst = max(lo.answers, key=lambda a: a.latency_s)
    parts = [f"{route} {statuses(lo.during(route, fault_at, back_at))}" for route in ROUTES]
    print(f"\n{name}: {len(lo.answers)} requests; in the fault: {'; '.join(parts)}; "
          f"slowest {worst.latency_s * 1000:.0f} ms ({worst.route} {worst.status}); "
          f"limits through redis again {took:.2f} s after the fault ended")  # fmt: skip


def check(name: str, fault: Fault, lo: Load, fault_at: float, back_at: float, gw: Gateway) -> None:
    every = lo.answers
    assert every, "no load ran"
    hung = [a for a in every if a.status < 0]
    assert not hung, f"{len(hung)} unanswered (timeout/connection error): {hung[:3]}"
    worst = max(a.latency_s for a in every)
    assert worst < QUICK_S, f"slowest answer {worst:.2f} s\n{gw.log()[-3000:]}"
    # Routes whose answer never depends on Redis (bans, rollouts, a cache that misses,
    # fail-open dedup passing through): always 200.
    for route in ("svc", "api", "cached", "dopen"):
        got = statuses([a for a in every if a.route == route])
        assert set(got) == {200}, (route, got)
    opened = statuses([a for a in every if a.route == "open"])
    assert set(opened) <= {200, 429} and opened.get(200), opened
    for route, allowed in (("closed", {200, 429, 503}), ("dclosed", {200, 503})):
        got = statuses([a for a in every if a.route == route])
        assert set(got) <= allowed, (route, got)
        if fault.unusable:
            # Settled into the fault (the first calls time out): fail-closed is 503 only.
            settled = statuses(lo.during(route, fault_at + 0.3, back_at))
            assert settled and set(settled) == {503}, (route, settled)
        else:
            late = statuses(lo.during(route, back_at + 1.0, time.monotonic()))
            assert 503 not in late, (name, route, late)
    if fault.unusable:
        assert statuses(lo.during("open", fault_at, back_at)).get(200), "fail-open blocked"
        assert "state store unavailable" in gw.log(), "the rollout never noticed"
