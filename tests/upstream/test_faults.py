"""Faults of the world: stale keep-alive, refused connects, silence, garbage, big bodies,
and the 101 passthrough, each against a real (hand-written) server on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.body import BytesBody
from gateway.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.upstream import HIGH_WATER, ConnectionPool
from tests.upstream.conftest import PoolFactory
from tests.upstream.servers import (
    ChunkSource,
    RawServer,
    Request,
    fetch,
    keepalive,
    read_request,
)

READ_SIZE = 256 * 1024  # the most one data_received delivers, on asyncio and uvloop


def ok(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def until(predicate: object, *, turns: int = 10_000) -> None:
    """Let the loop run until `predicate()` holds (event-driven state, no fixed sleep)."""
    for _ in range(turns):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0 if _ < 100 else 0.001)
    raise AssertionError("state not reached")


def closes_second_request_unanswered() -> RawServer:
    """Connection 0 answers one request, then closes on the next without a byte: the
    stale keep-alive race (the upstream closed just as the request went out)."""

    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        served = 0
        while (req := await read_request(reader)) is not None:
            if i == 0 and served == 1:
                return
            w.write(ok(req.body or b"ok"))
            served += 1

    return RawServer(handler)


async def test_stale_connection_is_retried_invisibly(make_pool: PoolFactory) -> None:
    async with closes_second_request_unanswered() as server:
        pool = make_pool(server.port)
        assert await (await fetch(pool)).read_all() == b"ok"
        resp = await fetch(pool)
        assert await resp.read_all() == b"ok"
        assert (pool.connects, pool.retries, server.connections) == (2, 1, 2)
        assert pool.open == 1 and pool.idle == 1


async def test_stale_connection_with_bytes_body_is_replayed(make_pool: PoolFactory) -> None:
    async with closes_second_request_unanswered() as server:
        pool = make_pool(server.port)
        await (await fetch(pool)).read_all()
        resp = await fetch(pool, "PUT", body=BytesBody(b"payload"))
        assert await resp.read_all() == b"payload"
        assert pool.retries == 1


@pytest.mark.parametrize(
    ("case", "body", "retry_stale"),
    [
        ("streamed-body", ChunkSource([b"abc", b"def"]), True),
        ("retry-not-allowed", None, False),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_stale_connection_not_retried(
    make_pool: PoolFactory, case: str, body: ChunkSource | None, retry_stale: bool
) -> None:
    async with closes_second_request_unanswered() as server:
        pool = make_pool(server.port)
        await (await fetch(pool)).read_all()
        with pytest.raises(UpstreamClosed) as err:
            await fetch(pool, "POST", body=body, retry_stale=retry_stale)
        assert err.value.before_response
        assert err.value.status == 502
        assert pool.retries == 0 and pool.in_flight == 0 and pool.open == 0


async def test_connection_closed_while_idle_is_dropped_at_acquire(make_pool: PoolFactory) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(ok())  # keep-alive by default in HTTP/1.1, yet the server closes

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        await (await fetch(pool)).read_all()
        await until(lambda: pool.idle == 0)
        assert await (await fetch(pool)).read_all() == b"ok"
        assert (pool.connects, pool.retries) == (2, 0)


async def test_connect_refused_fails_fast(make_pool: PoolFactory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        pool = make_pool(port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamConnectError) as err:
            await fetch(pool)
        assert loop.time() - start < 1.0
    assert err.value.status == 502
    assert "refused" in err.value.message.lower()
    assert pool.open == 0 and pool.in_flight == 0


async def silent(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await reader.read()  # never answers


async def stalls_mid_body(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await read_request(reader)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
    await reader.read()


async def test_silent_upstream_times_out_on_the_head(make_pool: PoolFactory) -> None:
    async with RawServer(silent) as server:
        pool = make_pool(server.port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamTimeout) as err:
            await fetch(pool, read_timeout_s=0.1)
        assert 0.09 <= loop.time() - start < 1.0
        assert err.value.status == 504
        assert pool.open == 0 and pool.in_flight == 0


@pytest.mark.parametrize(
    ("case", "read_timeout_s", "deadline_in_s", "message"),
    [("read-timeout", 0.1, None, "nothing for"), ("deadline", 5.0, 0.1, "deadline")],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_body_stall_times_out(
    make_pool: PoolFactory,
    case: str,
    read_timeout_s: float,
    deadline_in_s: float | None,
    message: str,
) -> None:
    async with RawServer(stalls_mid_body) as server:
        pool = make_pool(server.port)
        loop = asyncio.get_running_loop()
        deadline = None if deadline_in_s is None else loop.time() + deadline_in_s
        resp = await fetch(pool, read_timeout_s=read_timeout_s, deadline=deadline)
        assert await resp.read() == b"first"
        with pytest.raises(UpstreamTimeout, match=message):
            await resp.read()
        assert pool.open == 0 and pool.in_flight == 0
        with pytest.raises(UpstreamClosed):
            await resp.read()  # the response is dead, not silently empty


@pytest.mark.parametrize(
    ("case", "response"),
    [
        ("bad-version", b"HTTX/1.1 200 OK\r\n\r\n"),
        ("bad-status", b"HTTP/1.1 2x0 OK\r\n\r\n"),
        ("bad-header", b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n"),
        ("bad-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ("two-lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        (
            "length-and-chunked",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        ),
        ("101-without-connection-upgrade", b"HTTP/1.1 101 Switching\r\nUpgrade: ws\r\n\r\n"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_malformed_response_is_a_protocol_error(
    make_pool: PoolFactory, case: str, response: bytes
) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(response)
        await reader.read()

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        with pytest.raises(UpstreamProtocolError) as err:
            await (await fetch(pool)).read_all()
        assert err.value.status == 502
        assert pool.open == 0 and pool.in_flight == 0


@pytest.mark.parametrize(
    ("case", "response"),
    [
        ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_truncated_body(make_pool: PoolFactory, case: str, response: bytes) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(response)

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool)
        with pytest.raises(UpstreamClosed) as err:
            await resp.read_all()
        assert not err.value.before_response
        assert pool.open == 0 and pool.in_flight == 0


async def test_bytes_after_the_response_make_it_unreusable(make_pool: PoolFactory) -> None:
    def respond(req: Request) -> bytes:
        return ok() + b"GARBAGE"

    async with RawServer(keepalive(respond)) as server:
        pool = make_pool(server.port)
        assert await (await fetch(pool)).read_all() == b"ok"
        assert pool.idle == 0
        assert await (await fetch(pool)).read_all() == b"ok"
        assert server.connections == 2


async def test_large_body_streams_with_bounded_buffering(make_pool: PoolFactory) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    blocks = 50

    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(block) * blocks))
        for _ in range(blocks):
            w.write(block)
            await w.drain()
        await reader.read()

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool)
        conn = resp.connection
        assert conn is not None
        await until(lambda: conn.reading_paused)  # the consumer is slow: upstream waits
        total = 0
        while chunk := await resp.read():
            assert chunk[:1] == bytes([total % 256])
            total += len(chunk)
            assert conn.buffered <= HIGH_WATER + READ_SIZE
        assert total == len(block) * blocks
        assert HIGH_WATER < conn.peak_buffered <= HIGH_WATER + READ_SIZE
        assert pool.idle == 1  # fully read, reusable


async def upgrade_echo(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    req = await read_request(reader)
    assert req is not None and req.header("upgrade") == "echo"
    w.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello"
    )
    while data := await reader.read(65536):
        w.write(data.upper())
        await w.drain()


async def test_upgrade_passes_raw_bytes_both_ways(make_pool: PoolFactory) -> None:
    async with RawServer(upgrade_echo) as server:
        pool: ConnectionPool = make_pool(server.port)
        headers = [("Connection", "Upgrade"), ("Upgrade", "echo")]
        resp = await fetch(pool, headers=headers, read_timeout_s=0.05)
        assert resp.status == 101 and resp.is_upgrade
        assert await resp.read() == b"hello"
        for word in (b"ping", b"x" * 100_000):
            resp.write(word)
            await resp.drain()
            got = b""
            while len(got) < len(word):
                got += await resp.read()
            assert got == word.upper()
        assert pool.idle == 0 and pool.in_flight == 1
        resp.release()
        assert pool.in_flight == 0 and pool.open == 0
        with pytest.raises(UpstreamClosed):
            resp.write(b"late")


async def test_upgrade_read_returns_empty_at_upstream_eof(make_pool: PoolFactory) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 101 OK\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nbye")

    async with RawServer(handler) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool, headers=[("Connection", "upgrade"), ("Upgrade", "x")])
        assert await resp.read_all() == b"bye"
        assert pool.open == 0 and pool.in_flight == 0


async def test_upgrade_pumps_both_ways_at_once(make_pool: PoolFactory) -> None:
    """A reader task waits in read() while the writer is held in drain() (the
    WebSocket passthrough shape): neither may steal the other's wake-up."""
    async with RawServer(upgrade_echo) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool, headers=[("Connection", "Upgrade"), ("Upgrade", "echo")])
        assert await resp.read() == b"hello"
        payload = b"abcdefgh" * 500_000  # 4 MB: the transport pauses writing
        received = bytearray()

        async def reader() -> None:
            while len(received) < len(payload):
                chunk = await resp.read()
                assert chunk
                received.extend(chunk)

        task = asyncio.create_task(reader())
        for i in range(0, len(payload), 65536):
            resp.write(payload[i : i + 65536])
            await resp.drain()
        await asyncio.wait_for(task, 10)
        assert bytes(received) == payload.upper()
        resp.abort()
        assert pool.open == 0 and pool.in_flight == 0
