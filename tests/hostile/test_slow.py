"""Slow and greedy clients against a real gateway and a real upstream.

- slowloris: many connections drip their request heads a byte at a time; each is cut
  at `server.header_timeout` (the timer is not re-armed by the drip), while a normal
  client is served the whole time;
- slow bodies: a client that stalls mid-body (or sends an endless chunk extension)
  gets 408 after `server.body_timeout`, and the upstream request it was feeding is
  aborted (the upstream sees its connection end);
- a greedy client that never reads a large response: the gateway stops reading the
  upstream (backpressure end to end, the upstream blocks having sent a bounded
  amount), and when the client finally goes away, or has taken nothing for
  `server.send_timeout`, the upstream connection is closed and the pool holds nothing.
Waiting is event-driven (`until`: the state is polled on loop turns); the drip
intervals are the clients' behaviour, not waits for a state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest

from tests.conftest import GatewayFactory, InProcessGateway
from tests.hostile.wire import RecordingUpstream, ScriptedUpstream, raw_exchange
from tests.support import free_port, gateway_config

GET_OK = b"GET /ok HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"


def config(upstream_port: int, **server: Any) -> dict[str, Any]:
    return gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{upstream_port}"]},
        routes=[{"name": "all", "match": {}, "upstream": "up"}],
        server=server,
    )


async def until(predicate: Any, *, timeout_s: float = 10.0) -> None:
    """Poll `predicate()` on loop turns until it holds (fails after `timeout_s`)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not predicate():
        if loop.time() > end:
            raise AssertionError("state not reached")
        await asyncio.sleep(0.005)


async def closed_by_peer(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF (or a reset)."""
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            data += chunk
    return bytes(data)


async def test_slowloris_heads_are_cut_and_others_served(gateway: GatewayFactory) -> None:
    async with RecordingUpstream() as up:
        gw = await gateway(config(up.port, header_timeout="500ms"))
        head = b"GET /slow HTTP/1.1\r\nHost: api.test\r\nX-Drip: " + b"a" * 400
        cut = 0

        async def drip() -> None:
            nonlocal cut
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            eof = asyncio.ensure_future(closed_by_peer(reader))
            try:
                for i in range(len(head)):  # never completes the head within 500 ms
                    if eof.done():
                        break
                    writer.write(head[i : i + 1])
                    await asyncio.sleep(0.02)
                data = await asyncio.wait_for(eof, 10)
                assert b"HTTP/1.1 2" not in data  # never served
                cut += 1
            finally:
                eof.cancel()
                writer.close()

        drippers = [asyncio.ensure_future(drip()) for _ in range(20)]
        served = 0
        cut_at_first_answer = None
        while not all(d.done() for d in drippers):
            answer = await raw_exchange(gw.port, GET_OK)
            assert answer.statuses == [200]
            served += 1
            if cut_at_first_answer is None:
                cut_at_first_answer = cut
        await asyncio.gather(*drippers)
        assert cut == 20
        assert cut_at_first_answer == 0  # served while all 20 drippers held connections
        assert [r.target for r in up.requests] == ["/ok"] * served  # no dripped head


async def test_slow_body_gets_408_and_the_upstream_request_is_aborted(
    gateway: GatewayFactory,
) -> None:
    async with RecordingUpstream() as up:
        gw = await gateway(config(up.port, body_timeout="300ms"))
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: api.test\r\nContent-Length: 100000\r\n\r\n")
        writer.write(b"x" * 1000)  # then nothing more
        data = await asyncio.wait_for(closed_by_peer(reader), 10)
        writer.close()
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]
        assert b"request_timeout" in data
        # The upstream saw the start of the request, then its connection ended.
        await until(lambda: up.closed == len(up.raw) == 1)
        assert bytes(up.raw[0]).startswith(b"POST /upload HTTP/1.1\r\n")
        assert up.requests == []  # never a complete (truncated-but-framed) request
        await _pools_idle(gw)
        assert (await raw_exchange(gw.port, GET_OK)).statuses == [200]


async def test_endless_chunk_extension_is_a_slow_body(gateway: GatewayFactory) -> None:
    async with RecordingUpstream() as up:
        gw = await gateway(config(up.port, body_timeout="300ms"))
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n5;ext="
        )
        eof = asyncio.ensure_future(closed_by_peer(reader))
        while not eof.done():  # extension bytes, forever: no body byte ever follows
            writer.write(b"a" * 100)
            await asyncio.sleep(0.01)
        data = await eof
        writer.close()
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]
        assert up.requests == []


@pytest.mark.parametrize(
    "ending", ["client-disconnects", "send-timeout"], ids=["client-disconnects", "send-timeout"]
)
async def test_greedy_client_bounded_memory_and_no_leak(
    gateway: GatewayFactory, ending: str
) -> None:
    body_bytes = 256 * 1024 * 1024
    sent = 0
    blocked = asyncio.Event()
    finished = asyncio.Event()

    async def big(index: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % body_bytes)
        block = b"x" * 65536
        w.transport.set_write_buffer_limits(high=2 << 20)
        try:
            while sent < body_bytes:
                w.write(block)
                sent += len(block)
                if w.transport.get_write_buffer_size() > 1 << 20:
                    blocked.set()  # the gateway stopped taking bytes
                await w.drain()
        finally:
            finished.set()

    async with ScriptedUpstream(big) as up:
        send_timeout = "300ms" if ending == "send-timeout" else "60s"
        gw = await gateway(config(up.port, send_timeout=send_timeout))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", gw.port))
        sock.setblocking(False)
        _reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /big HTTP/1.1\r\nHost: api.test\r\n\r\n")
        await asyncio.wait_for(blocked.wait(), 20)
        # Kernel buffers on four socket ends plus the gateway's own bounded queue
        # (HIGH_WATER + one read): a few MB at most, never the 256 MB body.
        stalled_at = sent
        assert stalled_at < 48 * 1024 * 1024, stalled_at
        pools = list(gw.worker.runtime.pools.values())
        assert [p.in_flight for p in pools] == [1]
        if ending == "client-disconnects":
            writer.transport.abort()  # the client finally goes away
        # else the gateway gives up on a client that took nothing for 300 ms
        await asyncio.wait_for(finished.wait(), 10)  # the upstream connection was cut
        assert sent < body_bytes
        await _pools_idle(gw)
        assert [(p.open, p.idle) for p in pools] == [(0, 0)]  # closed, not pooled
        assert up.connections == 1
        writer.transport.abort()


async def _pools_idle(gw: InProcessGateway) -> None:
    pools = list(gw.worker.runtime.pools.values())
    await until(lambda: all(p.in_flight == 0 for p in pools))
