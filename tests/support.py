"""Test support: real upstream servers, config files, and gateways (in-process or not).

Everything here is a real component on loopback: aiohttp upstream apps, the gateway
run in the test's event loop (Worker) or as a `python -m gateway` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """Seconds that move only when a test says so (monotonic or unix, per `start`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.now:.3f}>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def upstream_app(name: str = "up") -> web.Application:
    """An upstream with the endpoints the integration tests need."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "upstream": name,
                "method": request.method,
                "path": request.path_qs,
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_bytes": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
        )

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="x")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.Response(text=f"slept {request.query.get('delay', '1')}")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(int(request.query.get("n", "5"))):
            await resp.write(f"chunk-{i};".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def nbytes(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        resp = web.StreamResponse()
        resp.content_length = n
        await resp.prepare(request)
        block = b"x" * 65536
        left = n
        while left > 0:
            await resp.write(block[: min(left, len(block))])
            left -= min(left, len(block))
        await resp.write_eof()
        return resp

    async def upload(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"body_bytes": n, "body_sha256": h.hexdigest()})

    async def hop(request: web.Request) -> web.Response:
        resp = web.Response(text="hop")
        resp.headers["Connection"] = "X-Upstream-Secret"
        resp.headers["X-Upstream-Secret"] = "1"
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers["Proxy-Authenticate"] = "Basic"
        resp.headers["X-Kept"] = "yes"
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    app = web.Application(client_max_size=1 << 40)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/bytes/{n}", nbytes)
    app.router.add_post("/upload", upload)
    app.router.add_get("/hop", hop)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None
    actual = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield int(actual)
    finally:
        await runner.cleanup()


def gateway_config(
    *,
    port: int,
    admin_port: int,
    upstreams: dict[str, list[str]],
    routes: list[dict[str, Any]],
    server: dict[str, Any] | None = None,
    workers: int = 1,
    upstream_extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ups: dict[str, Any] = {}
    for name, eps in upstreams.items():
        ups[name] = {"endpoints": eps, **(upstream_extra or {}).get(name, {})}
    return {
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "workers": workers,
        "server": {"watch_interval": "100ms", **(server or {})},
        "upstreams": ups,
        "routes": routes,
    }


def write_config(path: Path, config: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)  # atomic, as an operator's deploy tool would do


class GatewayProcess:
    """`python -m gateway run` as a subprocess, its log captured in a file."""

    def __init__(self, config_path: Path, port: int, admin_port: int, workers: int = 1):
        self.config_path = config_path
        self.port = port
        self.admin_port = admin_port
        self.log_path = config_path.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", str(config_path), "--workers", str(workers)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"http://127.0.0.1:{self.admin_port}/readyz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway not ready within {timeout_s}s:\n{self.log()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
