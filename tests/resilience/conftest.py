"""Fixtures for resilience tests: a fake clock, controllable upstreams, a gateway on that clock.

The clock is injected into the Worker (and so into every breaker and retry budget of
its Runtime): tests move time with `advance()`, never sleep to reach a state.
Upstreams are real aiohttp apps on loopback whose behaviour a test switches while
they run (`Backend.mode`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.worker import Worker
from tests.support import FakeClock, free_port, gateway_config, serve_app, write_config


class Backend:
    """An upstream whose answer a test switches: 'ok', a status like '502', or 'close'."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "ok"
        self.health = 200
        self.hits = 0
        self.health_hits = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            self.health_hits += 1
            return web.Response(status=self.health, text="health")

        async def slow(request: web.Request) -> web.Response:
            self.hits += 1
            await asyncio.sleep(float(request.query.get("delay", "0.3")))
            return web.Response(text=self.name)

        async def any_path(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            if self.mode == "close":
                assert request.transport is not None
                request.transport.abort()  # drop the connection before any response byte
                return web.Response(text="never sent")
            if self.mode != "ok":
                return web.Response(status=int(self.mode), text=f"{self.name} failing")
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/slow", slow)
        app.router.add_route("*", "/{tail:.*}", any_path)
        return app

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.url} mode={self.mode} hits={self.hits}>"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    """Three running backends: a, b, c."""
    async with AsyncExitStack() as stack:
        out = []
        for name in "abc":
            b = Backend(name)
            b.port = await stack.enter_async_context(serve_app(b.app()))
            out.append(b)
        yield out


def config(
    urls: list[str],
    upstream: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"svc": urls},
        routes=[{"name": "r", "upstream": "svc", **(route or {})}],
        upstream_extra={"svc": upstream or {}},
        server={"watch_config": False},
    )
    return cfg


StartGateway = Callable[[dict[str, Any]], Awaitable[Worker]]


@pytest.fixture
async def start_gateway(tmp_path: Path, clock: FakeClock) -> AsyncIterator[StartGateway]:
    """Start an in-process Worker on the fake clock; `worker.bound[0][1]` is its port."""
    started: list[Worker] = []

    async def start(cfg: dict[str, Any]) -> Worker:
        path = tmp_path / f"gateway-{len(started)}.yaml"
        write_config(path, cfg)
        worker = Worker(path, clock=clock)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for w in started:
        await w.stop()
