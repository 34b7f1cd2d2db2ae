"""The filter without a server: complete-body replies, the stream's slicing, reprs."""

from __future__ import annotations

import os
import zlib
from typing import Any, cast

from multidict import CIMultiDict

from gateway.config.compression_model import Compression
from gateway.exchange import Exchange, Reply
from gateway.filters.compression import (
    SLICE_BYTES,
    CompressedStream,
    CompressionFilter,
    EncodingCounts,
    _Codec,
)
from tests.compression.support import body


def exchange(accept: str | None = "gzip", method: str = "GET") -> Exchange:
    h: CIMultiDict[str] = CIMultiDict()
    if accept is not None:
        h["Accept-Encoding"] = accept
    return Exchange(
        method=method,
        path="/",
        query="",
        headers=h,
        host="h",
        scheme="http",
        client_ip="127.0.0.1",
        client_port=1,
        request_id="rid",
        route=cast(Any, None),
        body=None,
        content_length=None,
    )


async def test_complete_body_reply_is_compressed_in_one_call() -> None:
    f = CompressionFilter(Compression(), route="r")
    data = body(5000)

    async def terminal(ex: Exchange) -> Reply:
        return Reply(200, CIMultiDict({"Content-Type": "application/json"}), data)

    reply = await f(exchange("gzip"), terminal)
    assert reply.headers["Content-Encoding"] == "gzip"
    assert zlib.decompress(reply.body, 31) == data
    assert (f.counts["gzip"].bytes_in, f.counts["gzip"].bytes_out) == (5000, len(reply.body))


async def test_small_gateway_error_and_missing_type_pass() -> None:
    f = CompressionFilter(Compression(), route="r")

    async def error(ex: Exchange) -> Reply:
        return Reply.error(502, "bad_gateway", "upstream failed", ex.request_id)

    async def untyped(ex: Exchange) -> Reply:
        return Reply(200, CIMultiDict(), b"x" * 5000)

    assert "Content-Encoding" not in (await f(exchange(), error)).headers
    assert "Content-Encoding" not in (await f(exchange(), untyped)).headers
    assert f.skipped["small"] == 1 and f.skipped["content_type"] == 1


class Source:
    """The upstream edge: hands out the given chunks, then b""."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.status, self.reason, self.content_length = 200, "OK", None
        self.released = self.aborted = False

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def release(self) -> None:
        self.released = True

    def abort(self) -> None:
        self.aborted = True


async def test_a_large_chunk_is_compressed_slice_by_slice() -> None:
    data = os.urandom(1 << 20)  # incompressible: each slice's output comes out at once
    src = Source([data])
    counts = EncodingCounts()
    stream = CompressedStream(cast(Any, src), "gzip", _Codec("gzip", 1).stream(None), counts)
    outs = []
    while out := await stream.read():
        outs.append(out)
    assert len(outs) >= (1 << 20) // SLICE_BYTES
    assert max(len(o) for o in outs) <= SLICE_BYTES + 1024
    assert zlib.decompress(b"".join(outs), 31) == data
    assert (counts.bytes_in, counts.bytes_out) == (1 << 20, sum(map(len, outs)))
    stream.release()
    assert src.released and await stream.read() == b""


async def test_abort_reaches_the_upstream() -> None:
    src = Source([b"a" * 100, b"b" * 100])
    stream = CompressedStream(cast(Any, src), "br", _Codec("br", 4).stream(None), EncodingCounts())
    stream.abort()
    assert src.aborted and await stream.read() == b""


def test_reprs_show_state() -> None:
    f = CompressionFilter(Compression(encodings=["br", "gzip"]), route="api")
    assert repr(f) == (
        "<CompressionFilter route=api br:4,gzip:5 min_size=1024 compressed={'br': 0, 'gzip': 0}>"
    )
    assert repr(EncodingCounts()) == "<EncodingCounts 0 responses 0->0 B>"
    src = Source([])
    stream = CompressedStream(
        cast(Any, src), "gzip", _Codec("gzip", 1).stream(None), EncodingCounts()
    )
    assert repr(stream).startswith("<CompressedStream gzip 200 open up=<")
