"""Requests and responses over the pool against real servers: framing both ways."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiohttp import web

from gateway.body import BytesBody
from gateway.errors import BadRequest
from tests.upstream.conftest import PoolFactory
from tests.upstream.servers import (
    AppServer,
    ChunkSource,
    RawServer,
    Request,
    fetch,
    keepalive,
    read_request,
)


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "te": request.headers.get("Transfer-Encoding"),
                "cl": request.headers.get("Content-Length"),
                "len": len(body),
                "sha": hashlib.sha256(body).hexdigest(),
            }
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"part%d;" % i)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra.encode(),
        body,
    )


async def test_get_reuses_the_keepalive_connection(make_pool: PoolFactory) -> None:
    async with AppServer(echo_app()) as server:
        pool = make_pool(server.port)
        for path in ("/a", "/b?x=1"):
            resp = await fetch(pool, target=path)
            assert resp.status == 200
            assert resp.reason == "OK"
            assert resp.keep_alive
            body = await resp.read_all()
            assert path.encode() in body
            resp.release()
            assert pool.in_flight == 0 and pool.idle == 1
        assert server.connections == 1
        assert pool.connects == 1 and pool.open == 1


@pytest.mark.parametrize(
    ("case", "body_factory", "content_length", "te"),
    [
        ("bytes-body", lambda data: BytesBody(data), None, None),
        ("streamed-with-length", lambda data: ChunkSource([data[:5000], data[5000:]]), 20000, None),
        (
            "streamed-chunked",
            lambda data: ChunkSource([data[:7], data[7:9000], data[9000:]]),
            None,
            "chunked",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_post_body_framing(
    make_pool: PoolFactory,
    case: str,
    body_factory: object,
    content_length: int | None,
    te: str | None,
) -> None:
    data = (bytes(range(256)) * 80)[:20000]
    async with AppServer(echo_app()) as server:
        pool = make_pool(server.port)
        body = body_factory(data)  # type: ignore[operator]
        resp = await fetch(pool, "POST", "/up", body=body, content_length=content_length)
        got = json.loads(await resp.read_all())
        assert got["len"] == len(data)
        assert got["sha"] == hashlib.sha256(data).hexdigest()
        assert got["te"] == te
        assert got["cl"] == (None if te else str(len(data)))
        assert pool.idle == 1


async def test_request_head_is_exactly_the_given_headers_plus_framing(
    make_pool: PoolFactory,
) -> None:
    seen: list[Request] = []

    def respond(req: Request) -> bytes:
        seen.append(req)
        return ok()

    async with RawServer(keepalive(respond)) as server:
        pool = make_pool(server.port)
        headers = [("X-A", "1"), ("x-a", "2"), ("Accept", "*/*")]
        (await fetch(pool, "GET", "/p?q=%20", headers)).release()
        (await fetch(pool, "PUT", "/p", headers, BytesBody(b"abc"))).release()
        (await fetch(pool, "DELETE", "/p", headers, BytesBody(b""))).release()
        (await fetch(pool, "POST", "/p", headers, ChunkSource([]))).release()
        host = ("Host", f"127.0.0.1:{server.port}")
        assert seen[0].headers == [host, *headers]
        assert seen[0].target == "/p?q=%20"
        assert seen[1].headers == [host, *headers, ("Content-Length", "3")]
        assert seen[1].body == b"abc"
        assert seen[2].headers == [host, *headers]  # empty in-memory body: no framing
        assert seen[3].headers == [host, *headers, ("Transfer-Encoding", "chunked")]
        assert seen[3].body == b"" and seen[3].chunked
        assert server.connections == 1


@pytest.mark.parametrize(
    ("case", "headers", "body", "content_length"),
    [
        ("lf-in-value", [("X", "a\r\nEvil: 1")], None, None),
        ("bare-cr", [("X", "a\rb")], None, None),
        ("stream-shorter-than-length", [], ChunkSource([b"abc"]), 10),
        ("stream-longer-than-length", [], ChunkSource([b"abc", b"def"]), 4),
        ("bytes-length-mismatch", [], BytesBody(b"abc"), 4),
        ("missing-body", [], None, 3),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_bad_requests_are_refused(
    make_pool: PoolFactory,
    case: str,
    headers: list[tuple[str, str]],
    body: object,
    content_length: int | None,
) -> None:
    async with RawServer(keepalive(lambda req: ok())) as server:
        pool = make_pool(server.port)
        with pytest.raises(BadRequest):
            await fetch(pool, "POST", "/", headers, body, content_length=content_length)  # type: ignore[arg-type]
        assert pool.in_flight == 0 and pool.idle == 0


async def test_chunked_response(make_pool: PoolFactory) -> None:
    async with AppServer(echo_app()) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool, target="/chunked")
        assert resp.chunked and resp.content_length is None
        assert await resp.read_all() == b"part0;part1;part2;part3;part4;"
        assert pool.idle == 1  # released by itself at the end of the body
        resp.release()
        assert pool.idle == 1


async def test_response_until_eof_is_not_reused(make_pool: PoolFactory) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nuntil ")
        await w.drain()
        w.write(b"the end")

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool)
        assert not resp.keep_alive and resp.content_length is None and not resp.chunked
        assert resp.headers == [("X", "y")]
        assert await resp.read_all() == b"until the end"
        assert pool.idle == 0 and pool.open == 0


async def test_head_with_content_length_has_no_body(make_pool: PoolFactory) -> None:
    def respond(req: Request) -> bytes:
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return ok(b"after head")

    async with RawServer(keepalive(respond)) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool, "HEAD")
        assert resp.content_length == 1000
        assert await resp.read() == b""
        assert pool.idle == 1
        resp = await fetch(pool)
        assert await resp.read_all() == b"after head"
        assert server.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(make_pool: PoolFactory, status: int) -> None:
    head = b'HTTP/1.1 %d X\r\nETag: "e"\r\n\r\n' % status
    async with RawServer(keepalive(lambda req: head if req.target == "/" else ok())) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool)
        assert resp.status == status and resp.reason == "X"
        assert resp.headers == [("ETag", '"e"')]
        assert await resp.read_all() == b""
        assert await (await fetch(pool, target="/next")).read_all() == b"ok"
        assert server.connections == 1


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "two-packets"])
async def test_early_hints_are_skipped(make_pool: PoolFactory, split: bool) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            w.write(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
            )
            if split:
                await w.drain()
                await asyncio.sleep(0.01)
            w.write(ok(b"final", "Link: </s.css>\r\n"))

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        for _ in range(2):
            resp = await fetch(pool)
            assert resp.status == 200
            assert resp.headers == [("Content-Length", "5"), ("Link", "</s.css>")]
            assert await resp.read_all() == b"final"
        assert server.connections == 1


async def test_early_answer_stops_the_upload(make_pool: PoolFactory) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        await w.drain()
        await reader.read(1)  # keep reading a little, as servers do before closing

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        source = ChunkSource([b"x" * 1000] * 10_000)
        resp = await fetch(pool, "POST", body=source, content_length=10_000_000)
        assert resp.status == 413
        assert await resp.read_all() == b"big"
        assert source.pulled < 10_000
        assert pool.idle == 0 and pool.in_flight == 0
