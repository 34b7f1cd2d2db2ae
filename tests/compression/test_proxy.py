"""Compression end to end: a real gateway, a real upstream, a client that does not decode.

Bodies are fetched with `auto_decompress=False` and decoded here with zlib, brotli and
zstandard, so each check is on the bytes the gateway sent.
"""

from __future__ import annotations

import zlib
from typing import Any
from urllib.parse import urlencode

import aiohttp
import brotli
import pytest
import zstandard
from multidict import CIMultiDictProxy

from gateway.filters.compression import CompressionFilter
from tests.compression.support import body
from tests.conftest import GatewayFactory
from tests.support import free_port, gateway_config


def decode(coding: str, raw: bytes) -> bytes:
    if coding == "gzip":
        d = zlib.decompressobj(31)
        out = d.decompress(raw) + d.flush()
        assert d.eof and not d.unused_data
        return out
    if coding == "br":
        return bytes(brotli.decompress(raw))
    assert coding == "zstd"
    z = zstandard.ZstdDecompressor().decompressobj()
    out = z.decompress(raw)
    assert z.eof
    return out


def config(port: int, compression: dict[str, Any] | None = None) -> dict[str, Any]:
    return gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{port}"]},
        routes=[{"name": "api", "upstream": "up", "compression": compression or {}}],
    )


def target(n: int = 4096, *headers: str, **params: str) -> str:
    query: list[tuple[str, str]] = [("n", str(n)), *params.items()]
    query += [("h", h) for h in headers]
    return "/data?" + urlencode(query)


async def fetch(
    url: str, accept: str | None = "gzip, br, zstd", method: str = "GET", **headers: str
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    h = dict(headers)
    if accept is not None:
        h["Accept-Encoding"] = accept
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s,
        s.request(method, url, headers=h) as r,
    ):
        return r.status, r.headers, await r.read()


# (id, n, chunked): whole (known length <= 64 KiB), streamed with and without a length
SHAPES = [
    ("whole-4k", 4096, False),
    ("stream-1mib", 1 << 20, False),
    ("chunked-300k", 300_000, True),
]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize(("n", "chunked"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
async def test_body_decodes_to_the_upstream_bytes(
    gateway: GatewayFactory, data_upstream: int, coding: str, n: int, chunked: bool
) -> None:
    gw = await gateway(config(data_upstream))
    params = {"chunked": "1"} if chunked else {}
    status, h, raw = await fetch(gw.url + target(n, **params), accept=coding)
    assert status == 200
    assert h["Content-Encoding"] == coding
    assert h["Vary"] == "Accept-Encoding"
    assert decode(coding, raw) == body(n)
    assert len(raw) < n / 3
    if n <= 64 * 1024:  # compressed in one call, sent with its length
        assert h["Content-Length"] == str(len(raw))
        assert "Transfer-Encoding" not in h
    else:
        assert h["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in h


async def test_counters_and_server_preference(gateway: GatewayFactory, data_upstream: int) -> None:
    gw = await gateway(config(data_upstream, {"encodings": ["gzip", "br"]}))
    _, h, raw = await fetch(gw.url + target(10_000), accept="br, gzip, zstd")
    assert h["Content-Encoding"] == "gzip"  # the route prefers gzip; zstd is not offered
    _, h, raw2 = await fetch(gw.url + target(200_000), accept="br")
    assert h["Content-Encoding"] == "br"
    f = compression_filter(gw)
    assert (f.counts["gzip"].responses, f.counts["gzip"].bytes_in) == (1, 10_000)
    assert f.counts["gzip"].bytes_out == len(raw)
    assert (f.counts["br"].responses, f.counts["br"].bytes_in) == (1, 200_000)
    assert f.counts["br"].bytes_out == len(raw2)
    assert "zstd" not in f.counts


def compression_filter(gw: Any) -> CompressionFilter:
    """The route's CompressionFilter, found along its compiled chain (pipeline._link's
    closures: `f` the filter, `nxt` the rest of the chain)."""
    step = gw.worker.runtime.table.routes[0].handler
    while step.__closure__ is not None and "f" in step.__code__.co_freevars:
        cells = dict(zip(step.__code__.co_freevars, step.__closure__, strict=True))
        f = cells["f"].cell_contents
        if isinstance(f, CompressionFilter):
            return f
        step = cells["nxt"].cell_contents
    raise AssertionError("no compression filter in the chain")
