"""Fixtures for rollouts: configs with a service of two versions, backends whose error
share a test sets, a runtime or a whole gateway on the fake clock.

The clock drives holds and intervals: tests move it with `advance()` and call
`tick()` themselves (the worker's own task sleeps a real interval, 30 s by default,
so it never runs inside a test). Latency is real time on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.load import validate_data
from gateway.exchange import Exchange
from gateway.runtime import Runtime
from tests.resilience.conftest import FakeClock, StartGateway, clock, start_gateway
from tests.support import free_port

__all__ = ["FakeClock", "StartGateway", "clock", "start_gateway"]

PLAN: dict[str, Any] = {
    "steps": [
        {"weight": 5, "hold": "10m"},
        {"weight": 25, "hold": "10m"},
        {"weight": 50, "hold": "10m"},
        {"weight": 100},
    ],
    "gates": {
        "max_5xx_ratio": 0.05,
        "max_p99": "500ms",
        "vs_stable": {"max_5xx_ratio_delta": 0.02, "max_p99_ratio": 1.5},
        "min_requests": 100,
    },
    "interval": "30s",
}


def service_config(
    v1: list[Any],
    v2: list[Any],
    service: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
) -> dict[str, Any]:
    svc = {
        "versions": {"stable": {"upstream": "users-v1"}, "canary": {"upstream": "users-v2"}},
        "sticky": {"key": "header", "name": "X-Client"},
        "rollout": PLAN,
        **(service or {}),
    }
    return {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "server": {"watch_config": False},
        "upstreams": {
            "users-v1": {"endpoints": v1, **(upstream or {})},
            "users-v2": {"endpoints": v2, **(upstream or {})},
        },
        "services": {"users": svc},
        "routes": [{"name": "users", "upstream": "users"}],
        **(top or {}),
    }


def runtime_for(cfg: dict[str, Any], clock: FakeClock) -> Runtime:
    return Runtime.build(validate_data(cfg), "test", clock=clock)


def exchange(rt: Runtime, headers: dict[str, str] | None = None, ip: str = "10.0.0.1") -> Exchange:
    return Exchange(
        method="GET",
        path="/",
        query="",
        headers=CIMultiDict(headers or {}),
        host="example.com",
        scheme="http",
        client_ip=ip,
        client_port=1234,
        request_id="r",
        route=rt.table.routes[0],
        body=None,
        content_length=None,
    )


class Backend:
    """A version's server: answers its name; every `fail_every`-th request 503; `delay_s`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail_every = 0
        self.down = False  # drop connections (a region outage)
        self.delay_s = 0.0
        self.hits = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.hits += 1
            if self.down:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(text="never sent")
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_every and self.hits % self.fail_every == 0:
                return web.Response(status=503, text=f"{self.name} failing")
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    def __repr__(self) -> str:
        return f"<Backend {self.name} hits={self.hits} fail_every={self.fail_every}>"


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, Backend]]:
    from tests.support import serve_app

    async with AsyncExitStack() as stack:
        out = {}
        for name in ("v1", "v2", "eu", "us"):
            b = Backend(name)
            b.port = await stack.enter_async_context(serve_app(b.app()))
            out[name] = b
        yield out
