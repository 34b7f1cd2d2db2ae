"""The smallest proxy on the gateway's stack, as a reference point for bench/run.py.

aiohttp's low-level server on uvloop in front of a single-endpoint keep-alive pool
parsed by httptools, doing nothing else: no routing, no header rules, no timeouts,
GET only, no error handling. It answers "how fast can this stack proxy at all on
this machine?", so the gateway's figure can be read as a share of that ceiling as
well as of nginx's. Never use it for anything but measuring.

    python bench/bare_proxy.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop
from aiohttp import web
from aiohttp.web_request import BaseRequest


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future[tuple[int, bytes]] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        fut, self.fut = self.fut, None
        if fut is not None:
            fut.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None:
            self.fut.set_exception(ConnectionError("upstream closed"))


async def main(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    idle: list[Conn] = []

    async def handle(request: BaseRequest) -> web.Response:
        if idle:
            conn = idle.pop()
        else:
            _, conn = await loop.create_connection(Conn, "127.0.0.1", upstream_port)
        conn.body = []
        conn.fut = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(b"GET " + request.raw_path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = await conn.fut
        idle.append(conn)
        return web.Response(status=status, body=body)

    await loop.create_server(web.Server(handle, access_log=None), "127.0.0.1", listen_port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
