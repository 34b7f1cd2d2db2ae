"""Fixtures for the admin API: a real gateway process (one process or a supervisor with
workers) in front of a real upstream, and a small JSON client for its admin listener.

There is no clock to move in another process, so waiting for a state there (a rollout
leaving pending, a ban reaching both workers) polls the admin API with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import GatewayProcess, free_port, serve_app, upstream_app, write_config

ATTACK = "/api/items?id=1%27%20or%20%271%27%3D%271"
TOKEN = "s3cret-admin-token-0123456789"


def admin_config(port: int, admin_port: int, up: int, workers: int) -> dict[str, Any]:
    """Routes with screening and bans, a service under a rollout, an unreachable upstream."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connect errors
    return {
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "workers": workers,
        "server": {"watch_config": False, "shutdown_timeout": "2s"},
        "upstreams": {
            "v1": {"endpoints": [f"http://127.0.0.1:{up}"]},
            "v2": {"endpoints": [f"http://127.0.0.1:{up}"]},
            "dead": {
                "endpoints": [dead],
                "breaker": {
                    "consecutive_failures": 1,
                    "base_ejection": "10m",
                    "max_ejection": "10m",
                },
            },
        },
        "services": {
            "users": {
                "versions": {"stable": {"upstream": "v1"}, "canary": {"upstream": "v2"}},
                "sticky": {"key": "header", "name": "X-Client"},
                "rollout": {
                    "steps": [{"weight": 10, "hold": "1h"}, {"weight": 100}],
                    "interval": "100ms",
                },
            }
        },
        "bans": {"after_blocks": 2, "ban_for": "10m"},
        "routes": [
            {
                "name": "api",
                "match": {"path": {"prefix": "/api"}},
                "upstream": "v1",
                "screening": {},
            },
            {"name": "users", "match": {"path": {"prefix": "/users"}}, "upstream": "users"},
            {"name": "dead", "match": {"path": {"prefix": "/dead"}}, "upstream": "dead"},
        ],
    }


class Admin:
    """JSON calls to an admin listener: (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None):
        self.session = session
        self.base = base
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {}
        token = token if token is not None else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, json=body, headers=headers) as r:
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, await r.text()

    async def get(self, path: str) -> Any:
        status, body = await self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    async def until(
        self, path: str, ok: Callable[[Any], bool], timeout_s: float = 20.0, poke: Any = None
    ) -> Any:
        """GET `path` until `ok(body)`; `poke()` (traffic) between polls."""
        deadline = time.monotonic() + timeout_s
        body: Any = None
        while time.monotonic() < deadline:
            status, body = await self.call("GET", path)
            if status == 200 and ok(body):
                return body
            if poke is not None:
                await poke()
            else:
                await asyncio.sleep(0.05)
        raise AssertionError(f"{path} never satisfied the condition; last answer: {body}")


class Running:
    def __init__(self, proc: GatewayProcess, admin: Admin, config: dict[str, Any]) -> None:
        self.proc = proc
        self.admin = admin
        self.config = config

    @property
    def url(self) -> str:
        return self.proc.url

    def rewrite(self, config: dict[str, Any]) -> None:
        self.config = config
        write_config(self.proc.config_path, config)


StartGateway = Callable[..., Awaitable[Running]]


@pytest.fixture
async def upstream_port() -> AsyncIterator[int]:
    async with serve_app(upstream_app("up")) as port:
        yield port


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # A fresh connection per request: the kernel spreads them over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


@pytest.fixture
async def start_gateway(
    tmp_path: Path, upstream_port: int, session: aiohttp.ClientSession
) -> AsyncIterator[StartGateway]:
    procs: list[GatewayProcess] = []

    async def start(
        workers: int = 1,
        edit: Callable[[dict[str, Any]], None] | None = None,
        token: str | None = None,
        admin_host: str = "127.0.0.1",
    ) -> Running:
        """Run a gateway; `admin_host` is where the admin listener is reached."""
        port, admin_port = free_port(), free_port()
        cfg = admin_config(port, admin_port, upstream_port, workers)
        if edit is not None:
            edit(cfg)
        path = tmp_path / f"gateway-{len(procs)}.yaml"
        write_config(path, cfg)
        proc = GatewayProcess(path, port, admin_port, workers)
        procs.append(proc)
        admin = Admin(session, f"http://{admin_host}:{admin_port}", token)
        deadline = time.monotonic() + 30
        while True:  # the process starting up: nothing to await but its readiness
            if proc.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.proc.returncode}:\n{proc.log()}")
            with contextlib.suppress(aiohttp.ClientError):
                if (await admin.call("GET", "/readyz"))[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready:\n{proc.log()}")
            await asyncio.sleep(0.05)
        return Running(proc, admin, cfg)

    yield start
    for p in procs:
        await asyncio.to_thread(p.stop)
