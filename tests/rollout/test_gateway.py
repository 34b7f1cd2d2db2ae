"""Rollouts and regions end to end: real upstreams on loopback, an in-process gateway on
the fake clock, real HTTP clients; the admin API and the CLI against it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.admin.app import make_admin_app, start_admin
from gateway.cli import rollout_command
from gateway.rollout import State
from gateway.worker import Worker
from tests.rollout.conftest import Backend, FakeClock, StartGateway, service_config
from tests.support import free_port


def url(worker: Worker, path: str = "/x") -> str:
    return f"http://127.0.0.1:{worker.bound[0][1]}{path}"


async def clients(
    s: aiohttp.ClientSession, worker: Worker, n: int, start: int = 0
) -> list[tuple[int, str]]:
    """One request from each of `n` distinct clients: (status, version header)."""
    out = []
    for i in range(start, start + n):
        async with s.get(url(worker), headers={"X-Client": f"c{i}"}) as r:
            await r.read()
            out.append((r.status, r.headers.get("X-Served-Version", "")))
    return out


def cfg(servers: dict[str, Backend], **service: Any) -> dict[str, Any]:
    return service_config(
        [servers["v1"].url],
        [servers["v2"].url],
        {"version_header": "X-Served-Version", **service},
        upstream={"breaker": {"enabled": False}},
    )


async def test_a_canary_answering_20_percent_5xx_is_rolled_back_within_one_interval(
    servers: dict[str, Backend], start_gateway: StartGateway, clock: FakeClock
) -> None:
    servers["v2"].fail_every = 5
    gw = await start_gateway(cfg(servers))
    rollouts = gw.runtime.rollouts
    await rollouts.tick()  # pending -> 5%
    async with aiohttp.ClientSession() as s:
        got = await clients(s, gw, 3000)
        canary = [st for st, v in got if v == "canary"]
        assert 100 <= len(canary) <= 200
        assert 0.1 < canary.count(503) / len(canary) < 0.3  # retried 503s still fail 1 in 5^2
        clock.advance(30)
        await rollouts.tick()
        r = rollouts.rollouts["users"]
        assert (r.state, r.weight) == (State.FAILED, 0)
        assert "max_5xx_ratio" in r.record.reason
        after = await clients(s, gw, 300)
        assert {v for _, v in after} == {"stable"} and {st for st, _ in after} == {200}


async def test_a_healthy_canary_is_promoted_through_every_step(
    servers: dict[str, Backend], start_gateway: StartGateway, clock: FakeClock
) -> None:
    gw = await start_gateway(cfg(servers))
    rollouts = gw.runtime.rollouts
    r = rollouts.rollouts["users"]
    await rollouts.tick()
    weights = [r.weight]
    shares = []
    async with aiohttp.ClientSession() as s:
        while r.state is State.PROGRESSING:
            for _ in range(20):  # 10 minutes in 30 s intervals, 200 clients each interval
                got = await clients(s, gw, 100)
                assert {st for st, _ in got} == {200}
                clock.advance(30)
                await rollouts.tick()
            shares.append(sum(v == "canary" for _, v in got))
            weights.append(r.weight)
            assert len(weights) < 10
        got = await clients(s, gw, 100)
    assert weights == [5, 25, 50, 100] and r.state is State.PROMOTED
    assert {v for _, v in got} == {"canary"}


async def test_too_little_canary_traffic_is_not_judged(
    servers: dict[str, Backend], start_gateway: StartGateway, clock: FakeClock
) -> None:
    servers["v2"].fail_every = 1  # every canary answer a 503, but too few to judge
    gw = await start_gateway(cfg(servers))
    rollouts = gw.runtime.rollouts
    r = rollouts.rollouts["users"]
    await rollouts.tick()
    async with aiohttp.ClientSession() as s:
        for _ in range(25):
            await clients(s, gw, 20)
            clock.advance(30)
            await rollouts.tick()
    assert (r.state, r.weight) == (State.PROGRESSING, 5)
    assert r.not_judged > 0


async def test_cookie_stickiness_and_overrides_through_the_gateway(
    servers: dict[str, Backend], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(
        cfg(
            servers,
            sticky={"key": "cookie", "name": "gw_v"},
            override={"header": "X-Canary", "cookie": "canary"},
        )
    )
    await gw.runtime.rollouts.tick()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        async with s.get(url(gw)) as r:
            cookie = r.headers["Set-Cookie"]
            version = r.headers["X-Served-Version"]
        assert cookie.startswith("gw_v=") and "Max-Age=2592000" in cookie and "HttpOnly" in cookie
        value = cookie.split(";")[0]
        for _ in range(10):
            async with s.get(url(gw), headers={"Cookie": value}) as r:
                assert r.headers["X-Served-Version"] == version
                assert "Set-Cookie" not in r.headers
        async with s.get(url(gw), headers={"X-Canary": "always"}) as r:
            assert r.headers["X-Served-Version"] == "canary" and await r.text() == "v2"
        async with s.get(url(gw), headers={"Cookie": f"{value}; canary=never"}) as r:
            assert r.headers["X-Served-Version"] == "stable" and await r.text() == "v1"


async def test_local_region_down_fails_over_and_comes_back(
    servers: dict[str, Backend], start_gateway: StartGateway, clock: FakeClock
) -> None:
    eu, us = servers["eu"], servers["us"]
    config = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "server": {"watch_config": False},
        "region": "eu-west",
        "upstreams": {
            "svc": {
                "endpoints": [
                    {"url": us.url, "region": "us-east"},
                    {"url": eu.url, "region": "eu-west"},
                ],
                "breaker": {
                    "consecutive_failures": 2,
                    "base_ejection": "10s",
                    "max_ejection_percent": 100,
                },
            }
        },
        "routes": [{"name": "r", "upstream": "svc"}],
    }
    gw = await start_gateway(config)

    async def fire(n: int) -> list[str]:
        out = []
        async with aiohttp.ClientSession() as s:
            for _ in range(n):
                async with s.get(url(gw)) as r:
                    assert r.status == 200
                    out.append(await r.text())
        return out

    assert set(await fire(20)) == {"eu"}  # own region preferred, though listed second
    eu.down = True
    answers = await fire(30)
    assert set(answers) == {"us"}  # failures retried in the next region, then ejected
    assert eu.hits <= 20 + 3
    eu.down = False
    clock.advance(10.1)
    answers = await fire(10)
    assert answers[-5:] == ["eu"] * 5  # the half-open probe succeeded: back home
    balancer: Any = gw.runtime.upstreams["svc"].balancer
    assert balancer.names == ("eu-west", "us-east") and balancer.failovers >= 30


async def test_admin_api_and_cli(servers: dict[str, Backend], start_gateway: StartGateway) -> None:
    gw = await start_gateway(cfg(servers))
    port = free_port()
    admin = await start_admin(
        make_admin_app(lambda: {"ready": True}, rollouts=lambda: gw.runtime.rollouts),
        "127.0.0.1",
        port,
    )
    base = f"http://127.0.0.1:{port}/rollouts"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(base) as r:
                body = await r.json()
                assert r.status == 200 and body["rollouts"][0]["state"] == "pending"
            async with s.post(f"{base}/users/pause") as r:
                assert r.status == 409
                assert (await r.json())["error"] == "cannot pause a rollout that is pending"
            await gw.runtime.rollouts.tick()
            async with s.post(f"{base}/users/pause") as r:
                assert r.status == 200 and (await r.json())["state"] == "paused"
            async with s.post(f"{base}/nobody/pause") as r:
                assert r.status == 404
            async with s.post(f"{base}/users/explode") as r:
                assert r.status == 404
        admin_addr = f"127.0.0.1:{port}"
        assert await asyncio.to_thread(rollout_command, "resume", "users", admin_addr, None) == 0
        assert gw.runtime.rollouts.rollouts["users"].state is State.PROGRESSING
        assert await asyncio.to_thread(rollout_command, "resume", "users", admin_addr, None) == 1
        assert await asyncio.to_thread(rollout_command, "promote", "users", admin_addr, None) == 0
        assert await asyncio.to_thread(rollout_command, "status", "users", admin_addr, None) == 0
        assert gw.runtime.rollouts.rollouts["users"].weight == 100
        assert await asyncio.to_thread(rollout_command, "abort", None, admin_addr, None) == 2
    finally:
        await admin.cleanup()


@pytest.mark.parametrize("action", ["pause", "status"])
async def test_cli_without_an_admin_api(action: str) -> None:
    port = free_port()
    assert await asyncio.to_thread(rollout_command, action, "users", f"127.0.0.1:{port}", None) == 1
