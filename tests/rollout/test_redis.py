"""Rollout state in a real redis-server: two gateways follow one step; a restart resumes."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp

from gateway.rollout import Event, State
from gateway.worker import Worker
from tests.redis_server import RedisServer
from tests.rollout.conftest import Backend, FakeClock, StartGateway, service_config


def cfg(servers: dict[str, Backend], redis: RedisServer, prefix: str) -> dict[str, Any]:
    return service_config(
        [servers["v1"].url],
        [servers["v2"].url],
        top={"redis": {"url": redis.url, "key_prefix": prefix, "timeout": "1s"}},
    )


async def traffic(worker: Worker, n: int, ok: bool = True) -> None:
    port = worker.bound[0][1]
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            async with s.get(f"http://127.0.0.1:{port}/", headers={"X-Client": f"c{i}"}) as r:
                assert r.status == 200 or not ok


async def test_two_gateways_agree_on_the_step_and_a_restart_resumes(
    servers: dict[str, Backend],
    start_gateway: StartGateway,
    clock: FakeClock,
    redis_server: RedisServer,
) -> None:
    config = cfg(servers, redis_server, f"t{uuid.uuid4().hex[:10]}:")
    a = await start_gateway(config)
    b = await start_gateway(config)
    ra = a.runtime.rollouts.rollouts["users"]
    rb = b.runtime.rollouts.rollouts["users"]
    await a.runtime.rollouts.tick()
    await b.runtime.rollouts.tick()  # adopts a's start instead of starting again
    assert (ra.state, ra.weight, ra.record.gen) == (State.PROGRESSING, 5, 1)
    assert (rb.state, rb.weight, rb.record.gen) == (State.PROGRESSING, 5, 1)
    for _ in range(20):  # 10 minutes; only a serves traffic and judges
        await traffic(a, 150)
        clock.advance(30)
        await a.runtime.rollouts.tick()
        await b.runtime.rollouts.tick()
    assert (ra.record.step, ra.weight) == (1, 25)
    assert (rb.record.step, rb.weight, b.runtime.splits["users"].by_name["canary"].weight) == (
        1,
        25,
        25,
    )
    await rb.act(Event.PAUSE)
    await a.runtime.rollouts.tick()
    assert ra.state is State.PAUSED
    await b.stop()
    c = await start_gateway(config)  # a restart: resumes from the shared record at start
    rc = c.runtime.rollouts.rollouts["users"]
    assert (rc.state, rc.record.step, rc.weight) == (State.PAUSED, 1, 25)
    assert c.runtime.splits["users"].by_name["canary"].weight == 25


async def test_redis_down_still_rolls_back_locally(
    servers: dict[str, Backend],
    start_gateway: StartGateway,
    clock: FakeClock,
    redis_factory: Any,
) -> None:
    redis = redis_factory()
    servers["v2"].fail_every = 2
    gw = await start_gateway(cfg(servers, redis, "t:"))
    r = gw.runtime.rollouts.rollouts["users"]
    await gw.runtime.rollouts.tick()
    await traffic(gw, 3000, ok=False)
    redis.kill()
    clock.advance(30)
    await gw.runtime.rollouts.tick()
    assert (r.state, r.weight) == (State.FAILED, 0)
    assert r.store_errors >= 1
