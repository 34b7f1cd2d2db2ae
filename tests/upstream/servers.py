"""Real upstream servers on loopback for the upstream client's tests.

`RawServer` runs a hand-written connection handler (asyncio streams) for the edge
cases no well-behaved server produces; `AppServer` runs an aiohttp app for the normal
ones. Both bind 127.0.0.1 port 0 and count the connections they accepted, which is
how the tests see keep-alive reuse from the outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from gateway.body import BodySource
from gateway.upstream import ConnectionPool, UpstreamResponse

Handler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request from the stream (Content-Length or chunked body); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [(k, v) for k, v in (line.split(": ", 1) for line in lines[1:] if line)]
    req = Request(method, target, headers, b"")
    if (n := req.header("content-length")) is not None:
        req.body = await reader.readexactly(int(n))
    elif req.header("transfer-encoding") == "chunked":
        req.chunked = True
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        req.body = b"".join(parts)
    return req


class RawServer:
    """A TCP (or TLS) server running `handler(index, reader, writer)` per connection."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.connections
        self.connections += 1
        try:
            await self.handler(index, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # stopped by __aexit__; ending normally keeps asyncio's callback quiet
        finally:
            self._tasks.discard(task)
            writer.close()


def keepalive(respond: Callable[[Request], bytes]) -> Handler:
    """A handler answering every request on the connection with `respond(request)`."""

    async def handler(index: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            w.write(respond(req))
            await w.drain()

    return handler


@dataclass
class AppServer:
    """An aiohttp app on loopback; `peers` collects the client ports seen."""

    app: web.Application
    port: int = 0
    peers: set[Any] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def __aenter__(self) -> AppServer:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            assert request.transport is not None
            self.peers.add(request.transport.get_extra_info("peername"))
            resp: web.StreamResponse = await handler(request)
            return resp

        self.app.middlewares.append(count)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = cast(asyncio.Server, site._server)  # a uvloop Server is not a subclass
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def fetch(
    pool: ConnectionPool,
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: BodySource | None = None,
    *,
    content_length: int | None = None,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 2.0,
    deadline: float | None = None,
    retry_stale: bool = True,
) -> UpstreamResponse:
    """pool.request() with the Host header and test-friendly timeouts."""
    return await pool.request(
        method,
        target,
        [("Host", pool.spec.host_header), *(headers or [])],
        body,
        content_length=content_length,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        deadline=deadline,
        retry_stale=retry_stale,
    )


class ChunkSource:
    """A streamed request body: the given chunks, one per read(), yielding in between."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.pulled = 0

    async def read(self) -> bytes:
        await asyncio.sleep(0)
        if not self.chunks:
            return b""
        self.pulled += 1
        return self.chunks.pop(0)

    def __repr__(self) -> str:
        return f"<ChunkSource pulled={self.pulled} left={len(self.chunks)}>"
