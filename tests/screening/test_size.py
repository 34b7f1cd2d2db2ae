"""The size filter called directly (each limit, table-driven), and end to end: a chunked
body cut mid-stream with 413 while a real upstream receives only part of it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import orjson
import pytest

from gateway.filters.size import BodyTooLarge, LimitedBody
from tests.conftest import GatewayFactory
from tests.screening.support import Chunks, Upstream, exchange, screening_filter, size_filter
from tests.support import free_port, gateway_config

# (id, limits, request, expected status, expected error code)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], int, str | None]] = [
    ("method-allowed", {"methods": ["GET", "POST"]}, {"method": "POST", "body": b"{}"}, 200, None),
    ("method-refused", {"methods": ["GET", "POST"]}, {"method": "DELETE"}, 405,
     "method_not_allowed"),
    ("url-at-limit", {"max_url_bytes": 20}, {"path": "/a" * 5, "query": "q=1234567"}, 200,
     None),
    ("url-over-limit", {"max_url_bytes": 20}, {"path": "/a" * 5, "query": "q=12345678"}, 414,
     "uri_too_long"),
    ("url-path-only", {"max_url_bytes": "1KiB"}, {"path": "/" + "x" * 1024}, 414,
     "uri_too_long"),
    ("header-count-ok", {"max_headers": 3}, {"headers": [("A", "1"), ("B", "2")]}, 200, None),
    ("header-count-over", {"max_headers": 3},
     {"headers": [("A", "1"), ("B", "2"), ("C", "3")]}, 431, "request_header_fields_too_large"),
    ("header-bytes-over", {"max_header_bytes": 100}, {"headers": [("X-Big", "v" * 80)]}, 431,
     "request_header_fields_too_large"),
    ("content-type-exact", {"content_types": ["application/json"]},
     {"method": "POST", "body": b"{}",
      "headers": [("Content-Type", "Application/JSON; charset=utf-8")]},
     200, None),
    ("content-type-wildcard", {"content_types": ["text/*"]},
     {"method": "POST", "body": b"x", "headers": [("Content-Type", "text/csv")]}, 200, None),
    ("content-type-refused", {"content_types": ["application/json"]},
     {"method": "POST", "body": b"x", "headers": [("Content-Type", "text/plain")]}, 415,
     "unsupported_media_type"),
    ("content-type-missing-with-body", {"content_types": ["application/json"]},
     {"method": "POST", "body": b"x"}, 415, "unsupported_media_type"),
    ("content-type-not-needed-without-body", {"content_types": ["application/json"]},
     {"method": "GET"}, 200, None),
    ("content-type-any", {"content_types": ["*/*"]},
     {"method": "POST", "body": b"x", "headers": [("Content-Type", "image/png")]}, 200, None),
    ("content-length-at-limit", {"max_body_bytes": 10}, {"method": "POST", "body": b"x" * 10},
     200, None),
    ("content-length-over", {"max_body_bytes": "1KiB"},
     {"method": "POST", "body": b"x" * 1025}, 413, "payload_too_large"),
    ("chunked-over", {"max_body_bytes": 10},
     {"method": "POST", "body": Chunks([b"x" * 6, b"x" * 6])}, 413, "payload_too_large"),
    ("chunked-at-limit", {"max_body_bytes": 12},
     {"method": "POST", "body": Chunks([b"x" * 6, b"x" * 6])}, 200, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "request_kw", "status", "code"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_limits(
    limits: dict[str, Any],
    request_kw: dict[str, Any],
    status: int,
    code: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = size_filter(**limits)
    up = Upstream()
    ex = exchange(**request_kw)
    caplog.set_level(logging.INFO, "gateway.screening")
    try:
        reply = await f(ex, up)
    except BodyTooLarge as exc:  # raised mid-stream; the server turns it into the reply
        assert (exc.status, exc.code) == (status, code)
        assert f.rejected[413] == 1
        return
    assert reply.status == status
    if code is None:
        assert up.calls == 1
        assert not f.rejected
        return
    assert up.calls == 0  # answered before anything was read or forwarded
    body = orjson.loads(reply.body)
    assert body == {"error": code, "message": body["message"], "request_id": "req-1"}
    assert f.rejected[status] == 1
    assert f"{status} {code} on route api (id=req-1" in caplog.text
    if status == 405:
        assert reply.headers["Allow"] == "GET, POST"


async def test_content_length_over_limit_is_never_read() -> None:
    f = size_filter(max_body_bytes=100)
    body = Chunks([b"x" * 200])
    reply = await f(exchange(method="POST", body=body, content_length=200), Upstream())
    assert reply.status == 413
    assert body.pulled == 0


async def test_limited_body_stops_at_the_crossing_chunk() -> None:
    source = Chunks([b"a" * 4, b"b" * 4, b"c" * 4, b"d" * 4])
    counts: Counter[int] = Counter()
    body = LimitedBody(source, 10, counts)
    assert await body.read() == b"a" * 4
    assert await body.read() == b"b" * 4
    with pytest.raises(BodyTooLarge):
        await body.read()  # the crossing chunk is never handed on
    assert source.pulled == 3  # and nothing after it was pulled
    assert counts[413] == 1
    assert repr(body).startswith("<LimitedBody 12/10 bytes of ")


def test_repr_shows_limits() -> None:
    f = size_filter(methods=["GET"], max_body_bytes="1MiB")
    assert repr(f) == (
        "<SizeFilter route=api max_body_bytes=1048576 max_url_bytes=8192 "
        "max_header_bytes=32768 max_headers=100 methods=['GET']>"
    )


async def test_chunked_body_cut_mid_stream_upstream_never_gets_the_rest(
    gateway: GatewayFactory,
) -> None:
    """A real upstream counts the bytes it receives; the gateway cuts the stream at 64 KiB."""
    received = 0
    upstream_closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        while data := await reader.read(65536):
            received += len(data)  # never answers: only the gateway can end this
        upstream_closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limit, chunk, chunks = 64 * 1024, 16 * 1024, 64  # 1 MiB offered
    try:
        gw = await gateway(
            gateway_config(
                port=0,
                admin_port=free_port(),
                upstreams={"up": [f"http://127.0.0.1:{port}"]},
                routes=[{"name": "upload", "upstream": "up", "limits": {"max_body_bytes": limit}}],
            )
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        sent = 0
        for _ in range(chunks):
            writer.write(b"%x\r\n" % chunk + b"z" * chunk + b"\r\n")
            sent += chunk
            try:
                await asyncio.wait_for(writer.drain(), 2)
            except (ConnectionError, TimeoutError):
                break
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 413"), status
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"application/json" in head
        writer.close()
        await asyncio.wait_for(upstream_closed.wait(), 5)  # the upstream connection dropped
    finally:
        server.close()
    assert received <= limit + chunk  # the body up to the limit (and framing), no more
    assert received < chunks * chunk


async def test_chunked_body_cut_while_the_screen_reads_it() -> None:
    """Size then screening, as the pipeline orders them: the screen's inspection read
    crosses max_body_bytes, BodyTooLarge (413) ends the request, nothing reaches the
    upstream and nothing after the crossing chunk is pulled."""
    size = size_filter(max_body_bytes=1000)
    screen = screening_filter(inspect_body_bytes=65536)
    up = Upstream()
    source = Chunks([b'{"a": "' + b"x" * 600, b"x" * 600, b"x" * 600, b'"}'])
    ex = exchange(method="POST", body=source, headers=[("Content-Type", "application/json")])
    with pytest.raises(BodyTooLarge):
        await size(ex, lambda e: screen(e, up))
    assert up.calls == 0
    assert source.pulled == 2
    assert size.rejected[413] == 1
