"""Fixtures for overload and dedup tests: a fake clock, and a counting upstream a test
can hold (its `gate`) or slow down (its `delay_s`) while it runs.

`Counting` is a real aiohttp app on loopback: every request is counted (`hits`), the
answer says which hit it was (so a replay is told from a repeat), and `arrived` is set
when a request is in the handler, so a test can wait for "the first one is in flight"
on an event instead of a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.worker import Worker
from tests.resilience.conftest import FakeClock
from tests.support import free_port, serve_app, write_config

__all__ = ["Counting", "FakeClock", "base_config"]


class Counting:
    def __init__(self) -> None:
        self.hits = 0
        self.active = 0
        self.delay_s = 0.0
        self.status = 201
        self.size = 0  # pad the answer to at least this many bytes
        self.gate: asyncio.Event | None = None  # set: requests wait for it
        self.arrived = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.hits += 1
            n = self.hits
            body = await request.read()
            self.active += 1
            self.arrived.set()
            try:
                if self.gate is not None:
                    await self.gate.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
            finally:
                self.active -= 1
            text = f'{{"hit": {n}, "body_bytes": {len(body)}}}'
            text += " " * max(0, self.size - len(text))
            return web.Response(status=self.status, text=text, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    def __repr__(self) -> str:
        return f"<Counting {self.url} hits={self.hits} active={self.active}>"


@pytest.fixture
async def counting() -> AsyncIterator[Counting]:
    c = Counting()
    async with serve_app(c.app()) as port:
        c.port = port
        yield c


def base_config(
    url: str,
    routes: list[dict[str, Any]],
    *,
    upstream: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    return {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "server": {"watch_config": False},
        "upstreams": {"svc": {"endpoints": [url], **(upstream or {})}},
        "routes": [{"upstream": "svc", **r} for r in routes],
        **top,
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def worker_on(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    """Start an in-process Worker; `fake_clock=True` puts its runtime on `clock`."""
    started: list[Worker] = []

    async def start(cfg: dict[str, Any], fake_clock: bool = False) -> Worker:
        path = tmp_path / f"gateway-{len(started)}.yaml"
        write_config(path, cfg)
        worker = Worker(path, clock=clock if fake_clock else None)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for w in started:
        await w.stop()
