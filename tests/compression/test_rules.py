"""When the gateway compresses, and what it does to the headers: each rule against a real
upstream through a real gateway (route defaults: min_size 1KiB, zstd > br > gzip)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.compression.support import body
from tests.compression.test_proxy import compression_filter, config, decode, fetch, target
from tests.conftest import GatewayFactory

NO_CONTENT = object()
# (id, target, fetch kwargs, Content-Encoding expected or None, Vary expected, skip reason)
RULES: list[tuple[str, str, dict[str, Any], str | None, bool, str | None]] = [
    ("compressed", target(4096), {}, "zstd", True, None),
    ("error-status-compressed", target(4096, status="404"), {}, "zstd", True, None),
    ("at-min-size", target(1024), {}, "zstd", True, None),
    ("below-min-size", target(1023), {}, None, True, "small"),
    ("unknown-length-small", target(100, chunked="1"), {}, "zstd", True, None),
    ("already-encoded", target(4096, "Content-Encoding: gzip"), {}, "gzip", False, "encoded"),
    ("no-transform-response", target(4096, "Cache-Control: public, no-transform"), {},
     None, False, "no_transform"),
    ("no-transform-request", target(4096), {"Cache-Control": "no-transform"},
     None, True, "no_transform"),
    ("range-request", target(4096), {"Range": "bytes=0-99"}, None, True, "range"),
    ("partial-content", target(4096, "Content-Range: bytes 0-4095/9999", status="206"), {},
     None, True, "range"),
    ("head", target(4096), {"method": "HEAD"}, None, True, "head"),
    ("no-content-204", target(4096, status="204"), {}, None, False, "no_content"),
    ("not-modified-304", target(4096, 'ETag: "v1"', status="304"), {},
     None, False, "no_content"),
    ("type-not-listed", target(4096, type="image/png"), {}, None, False, "content_type"),
    ("type-with-params", target(4096, type="text/html; charset=utf-8"), {}, "zstd", True, None),
    ("type-suffix", target(4096, type="application/problem+json"), {}, "zstd", True, None),
    ("type-case", target(4096, type="Application/JSON"), {}, "zstd", True, None),
    ("event-stream", target(4096, type="text/event-stream"), {}, None, False, "content_type"),
    ("content-digest", target(4096, "Content-Digest: sha-256=:AAAA=:"), {},
     None, False, "digest"),
    ("no-accept-encoding", target(4096), {"accept": None}, None, True, "not_accepted"),
    ("unsupported-only", target(4096), {"accept": "deflate, compress"}, None, True,
     "not_accepted"),
    ("identity-q0-unsupported", target(4096), {"accept": "identity;q=0, deflate"}, None, True,
     "not_accepted"),
    ("gzip-only", target(4096), {"accept": "gzip"}, "gzip", True, None),
    ("gzip-by-q", target(4096), {"accept": "zstd;q=0.1, br;q=0.9, gzip"}, "gzip", True,
     None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "kwargs", "encoding", "vary", "reason"),
    [r[1:] for r in RULES],
    ids=[r[0] for r in RULES],
)
async def test_rule(
    gateway: GatewayFactory,
    data_upstream: int,
    url: str,
    kwargs: dict[str, Any],
    encoding: str | None,
    vary: bool,
    reason: str | None,
) -> None:
    gw = await gateway(config(data_upstream))
    status, h, raw = await fetch(gw.url + url, **kwargs)
    n = int(url.split("n=")[1].split("&")[0])
    assert h.get("Content-Encoding") == encoding
    assert (h.get("Vary") == "Accept-Encoding") is vary
    f = compression_filter(gw)
    if reason is None:
        assert f.skipped == dict.fromkeys(f.skipped, 0)
    else:
        assert {k: v for k, v in f.skipped.items() if v} == {reason: 1}
    if status in (204, 304) or kwargs.get("method") == "HEAD":
        assert raw == b""
        if kwargs.get("method") == "HEAD":
            assert h["Content-Length"] == str(n)
    elif reason == "encoded" or encoding is None:
        assert raw == body(n)  # passed through untouched
    else:
        assert decode(encoding, raw) == body(n)


# (id, upstream headers, Vary expected)
VARY = [
    ("none", (), "Accept-Encoding"),
    ("merged", ("Vary: Origin",), "Origin, Accept-Encoding"),
    ("merged-lines", ("Vary: Origin", "Vary: Cookie, X-Tenant"),
     "Origin, Cookie, X-Tenant, Accept-Encoding"),
    ("already-listed", ("Vary: Origin, accept-encoding",), "Origin, accept-encoding"),
    ("star", ("Vary: *",), "*"),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "expected"), [v[1:] for v in VARY], ids=[v[0] for v in VARY])
async def test_vary_merge(
    gateway: GatewayFactory, data_upstream: int, headers: tuple[str, ...], expected: str
) -> None:
    gw = await gateway(config(data_upstream))
    for accept in ("gzip", None):  # the identity copy varies too
        _, h, _ = await fetch(gw.url + target(4096, *headers), accept=accept)
        assert h.getall("Vary") == [expected]


# (id, upstream ETag, Accept-Encoding, ETag expected)
ETAGS = [
    ("strong-weakened", '"v1"', "gzip", 'W/"v1"'),
    ("weak-kept", 'W/"v1"', "gzip", 'W/"v1"'),
    ("identity-keeps-strong", '"v1"', None, '"v1"'),
]


@pytest.mark.parametrize(
    ("etag", "accept", "expected"), [e[1:] for e in ETAGS], ids=[e[0] for e in ETAGS]
)
@pytest.mark.parametrize("n", [4096, 200_000], ids=["whole", "streamed"])
async def test_etag(
    gateway: GatewayFactory,
    data_upstream: int,
    etag: str,
    accept: str | None,
    expected: str,
    n: int,
) -> None:
    gw = await gateway(config(data_upstream))
    _, h, _ = await fetch(gw.url + target(n, f"ETag: {etag}"), accept=accept)
    assert h["ETag"] == expected


async def test_accept_ranges_dropped_only_when_compressed(
    gateway: GatewayFactory, data_upstream: int
) -> None:
    gw = await gateway(config(data_upstream))
    url = gw.url + target(4096, "Accept-Ranges: bytes")
    _, h, _ = await fetch(url, accept="gzip")
    assert "Accept-Ranges" not in h
    _, h, _ = await fetch(url, accept=None)
    assert h["Accept-Ranges"] == "bytes"


async def test_min_size_and_content_types_configured(
    gateway: GatewayFactory, data_upstream: int
) -> None:
    gw = await gateway(config(data_upstream, {"min_size": "64KiB", "content_types": ["image/*"]}))
    _, h, _ = await fetch(gw.url + target(70_000, type="image/png"), accept="gzip")
    assert h["Content-Encoding"] == "gzip"
    _, h, _ = await fetch(gw.url + target(60_000, type="image/png"), accept="gzip")
    assert "Content-Encoding" not in h
    _, h, _ = await fetch(gw.url + target(70_000), accept="gzip")  # application/json
    assert "Content-Encoding" not in h


async def test_route_without_compression_is_untouched(
    gateway: GatewayFactory, data_upstream: int
) -> None:
    cfg = config(data_upstream)
    del cfg["routes"][0]["compression"]
    gw = await gateway(cfg)
    _, h, raw = await fetch(gw.url + target(4096), accept="gzip")
    assert "Content-Encoding" not in h and "Vary" not in h
    assert raw == body(4096)
