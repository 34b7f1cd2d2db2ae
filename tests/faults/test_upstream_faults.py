"""Faulty upstreams behind a real gateway, one case id per behaviour.

The faulty upstream (`ScriptedUpstream`) misbehaves on its first connection only and
answers normally on any later one. Each case asserts:
- what the client got: a status (502/504 when nothing was sent yet) or a cut stream
  (the head went out, the body never completed: the connection was closed);
- that the pool did not reuse the broken connection: a second request succeeds and
  the upstream counts the connections it accepted;
- that a client on another route, to a healthy upstream, is served throughout.
Timeouts are short route settings (read 300 ms); the drips are the upstream's
behaviour, not waits for a state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.hostile.wire import (
    Answer,
    ConnHandler,
    RecordingUpstream,
    ScriptedUpstream,
    raw_exchange,
)
from tests.support import free_port, gateway_config

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Fault = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def ok(body: bytes = b"fine") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def scripted(fault: Fault) -> ConnHandler:
    """Connection 0 runs `fault`; later connections answer every request with ok()."""

    async def handler(index: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if index == 0:
            await reader.readuntil(b"\r\n\r\n")
            await fault(reader, w)
            return
        while True:
            await reader.readuntil(b"\r\n\r\n")
            w.write(ok())
            await w.drain()

    return handler


def send(data: bytes, then: str = "keep") -> Fault:
    """Write `data`, then 'reset' (RST), 'close' (FIN) or 'keep' the connection open."""

    async def fault(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(data)
        await w.drain()
        if then == "reset":
            w.transport.abort()
        elif then == "close":
            w.close()
        else:
            await reader.read()  # until the gateway gives up on us

    return fault


def drip(head: bytes, data: bytes, interval_s: float) -> Fault:
    """Write `head` at once, then `data` one byte per `interval_s`."""

    async def fault(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(head)
        for i in range(len(data)):
            w.write(data[i : i + 1])
            await w.drain()
            await asyncio.sleep(interval_s)

    return fault


LARGE = 1_000_000  # over the gateway's small-body size: streamed, head sent first
HEAD_200_LARGE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LARGE
HEAD_200_SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

# (id, fault, route settings, method, expected: a status, or "cut", upstream connections
#  after the faulty request and one more)
CASES: list[tuple[str, Fault, dict[str, Any], str, int | str, int]] = [
    ("reset-before-response", send(b"", "reset"), {}, "GET", 502, 2),
    ("reset-mid-head", send(b"HTTP/1.1 200 OK\r\nContent-Le", "reset"), {}, "GET", 502, 2),
    ("reset-mid-small-body", send(HEAD_200_SMALL + b"x" * 50, "reset"), {}, "GET", 502, 2),
    ("reset-mid-large-body", send(HEAD_200_LARGE + b"x" * 200_000, "reset"), {}, "GET", "cut", 2),
    ("reset-mid-chunked", send(CHUNKED_HEAD + b"5\r\nhello\r\n", "reset"), {}, "GET", "cut", 2),
    ("garbage-status-line", send(b"HTTP/1.1 2OO OK\r\n\r\n"), {}, "GET", 502, 2),
    ("garbage-not-http", send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), {}, "GET", 502, 2),
    ("garbage-header", send(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"), {}, "GET", 502, 2),
    (
        "cl-and-te-response",
        send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"),
        {},
        "GET",
        502,
        2,
    ),
    ("short-small-body-then-close", send(HEAD_200_SMALL + b"x" * 50, "close"), {}, "GET", 502, 2),
    (
        "short-large-body-then-close",
        send(HEAD_200_LARGE + b"x" * 200_000, "close"),
        {},
        "GET",
        "cut",
        2,
    ),
    (
        "drip-head-1-byte-per-s",
        drip(b"", b"HTTP/1.1 200 OK\r\n", 1.0),
        {"timeouts": {"read": "300ms"}},
        "GET",
        504,
        2,
    ),
    (
        "drip-small-body-1-byte-per-s",
        drip(HEAD_200_SMALL, b"x" * 100, 1.0),
        {"timeouts": {"read": "300ms"}},
        "GET",
        504,
        2,
    ),
    (
        "drip-large-body-1-byte-per-s",
        drip(HEAD_200_LARGE + b"x" * 100_000, b"x" * 100, 1.0),
        {"timeouts": {"read": "300ms"}},
        "GET",
        "cut",
        2,
    ),
    (
        "drip-within-read-timeout-hits-total",
        drip(b"", b"HTTP/1.1 200 OK\r\n", 0.1),
        {"timeouts": {"read": "1s", "total": "400ms"}},
        "GET",
        504,
        2,
    ),
    (
        "response-head-too-large",
        send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n"),
        {},
        "GET",
        502,
        2,
    ),
    (
        "response-headers-too-many",
        send(b"HTTP/1.1 200 OK\r\n" + b"X-H: v\r\n" * 20_000 + b"Content-Length: 0\r\n\r\n"),
        {},
        "GET",
        502,
        2,
    ),
    (
        "content-length-over-max",
        send(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000),
        {"max_response_bytes": 1000},
        "GET",
        502,
        2,
    ),
    (
        "chunked-over-max",
        send(CHUNKED_HEAD + b"".join(b"200\r\n" + b"x" * 512 + b"\r\n" for _ in range(10))),
        {"max_response_bytes": 1000},
        "GET",
        "cut",
        2,
    ),
    (
        "eof-delimited-over-max",
        send(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000),
        {"max_response_bytes": 1000},
        "GET",
        "cut",
        2,
    ),
    ("101-unsolicited", send(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"), {}, "GET", 502, 2),
    (
        "101-unsolicited-with-upgrade",
        send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"),
        {},
        "GET",
        502,
        2,
    ),
    ("head-response-with-body", send(ok(b"hello")), {}, "HEAD", 200, 2),
]


def config(faulty: int, healthy: int, route: dict[str, Any]) -> dict[str, Any]:
    return gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={
            "faulty": [f"http://127.0.0.1:{faulty}"],
            "healthy": [f"http://127.0.0.1:{healthy}"],
        },
        routes=[
            {
                "name": "faulty",
                "match": {"path": {"prefix": "/f"}},
                "upstream": "faulty",
                "retries": {"attempts": 0},
                **route,
            },
            {"name": "healthy", "match": {}, "upstream": "healthy"},
        ],
    )


def request(method: str, path: str) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n" % (
        method.encode(),
        path.encode(),
    )


def outcome(answer: Answer, method: str) -> int | str:
    if method == "HEAD":  # no body to parse: the head, and nothing after it
        head, _, rest = answer.raw.partition(b"\r\n\r\n")
        assert rest == b"", rest[:100]
        return int(head.split(b" ", 2)[1])
    if answer.cut:
        return "cut"
    assert len(answer.statuses) == 1, answer.raw[:300]
    return answer.statuses[0]


@pytest.mark.parametrize(
    ("fault", "route", "method", "expected", "connections"),
    [pytest.param(f, r, m, e, c, id=i) for i, f, r, m, e, c in CASES],
)
async def test_faulty_upstream(
    gateway: GatewayFactory,
    fault: Fault,
    route: dict[str, Any],
    method: str,
    expected: int | str,
    connections: int,
) -> None:
    async with ScriptedUpstream(scripted(fault)) as bad, RecordingUpstream() as good:
        gw = await gateway(config(bad.port, good.port, route))
        faulty = asyncio.ensure_future(raw_exchange(gw.port, request(method, "/f/1")))
        healthy = 0
        while not faulty.done():  # another route's client is untouched meanwhile
            answer = await raw_exchange(gw.port, request("GET", "/h"))
            assert answer.statuses == [200]
            healthy += 1
        assert healthy >= 1
        assert outcome(await faulty, method) == expected
        # The broken connection is not reused: the next request gets a fresh one.
        again = await raw_exchange(gw.port, request("GET", "/f/2"))
        assert again.statuses == [200] and again.bodies == [b"fine"]
        assert bad.connections == connections
        pools = list(gw.worker.runtime.pools.values())
        assert sum(p.in_flight for p in pools) == 0


async def test_clean_1xx_response_keeps_the_connection(gateway: GatewayFactory) -> None:
    """Interim responses (100, 103) are dropped, the final one forwarded, and the
    connection reused."""

    async def handler(index: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            w.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + ok()
            )
            await w.drain()

    async with ScriptedUpstream(handler) as up, RecordingUpstream() as good:
        gw = await gateway(config(up.port, good.port, {}))
        for i in range(3):
            answer = await raw_exchange(gw.port, request("GET", f"/f/{i}"))
            assert answer.statuses == [200] and answer.bodies == [b"fine"]
            assert b"Early Hints" not in answer.raw
        assert up.connections == 1
