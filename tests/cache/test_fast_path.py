"""The server's cache-hit fast path (Route.cache_fast, CacheFilter.fast_hit).

On a route whose chain has nothing before the cache, server.py answers a fresh memory
hit for a plain GET without building an Exchange or running the chain. These tests
hold it to the full path: the same request, with the fast path on and then off for
the same route (`route.cache_fast = None`), gets byte-identical responses but for
the Date line (the client's X-Request-ID is believed from a trusted proxy, so the
request id line is the same too; the store's clock is a FakeClock, so Age and ttl
are). Requests the fast path must not answer (HEAD, conditionals, Range, request
Cache-Control, stale entries, HTTP/1.0, Connection: close, a body) fall back, and a
route with any filter before the cache never takes it.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.cache.store import MemoryStore
from gateway.config.cache_model import Cache
from gateway.filters.cache import CacheFilter, fast_path_filter
from gateway.observability.metrics import REQUESTS, metrics
from gateway.pipeline import FILTER_ORDER, Filter
from gateway.routing.table import Route
from tests.cache.support import FakeClock, cache_filter, start
from tests.conftest import GatewayFactory, InProcessGateway
from tests.observability.test_accesslog import lines_of
from tests.support import free_port, gateway_config

RID = "0123456789abcdef0123456789abcdef"


async def exchange_raw(port: int, head: str) -> bytes:
    """Send one request head, read one complete response (Content-Length framed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        raw = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"\r\nContent-Length: (\d+)\r\n", raw, re.IGNORECASE)
        if m is not None and not head.startswith("HEAD "):
            raw += await reader.readexactly(int(m.group(1)))
        return raw
    finally:
        writer.close()


def request(target: str, *extra: str, method: str = "GET", version: str = "1.1") -> str:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", f"X-Request-ID: {RID}"]
    return "\r\n".join([*lines, *extra, "", ""])


def without_date(raw: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)


def route(gw: InProcessGateway) -> Route:
    return gw.worker.runtime.table.routes[0]


def entries(gw: InProcessGateway) -> list[Any]:
    store = gw.worker.runtime.cache
    assert isinstance(store, MemoryStore)
    return list(store._entries.values())


async def both_paths(gw: InProcessGateway, head: str) -> tuple[bytes, bytes]:
    """(fast path on, fast path off) for the same request head."""
    fast = route(gw).cache_fast
    fast_raw = await exchange_raw(gw.port, head)
    route(gw).cache_fast = None
    try:
        slow_raw = await exchange_raw(gw.port, head)
    finally:
        route(gw).cache_fast = fast
    return fast_raw, slow_raw


async def trusted_gateway(
    gateway: GatewayFactory, up: int, cache: dict[str, Any] | None = None
) -> tuple[InProcessGateway, FakeClock]:
    return await start(gateway, up, cache, trusted_proxies=["127.0.0.1/32"])


# (id, cache section, query of the stored response, extra request header lines)
IDENTICAL = [
    ("plain", {}, "id=a&cc=max-age%3D60", ()),
    ("etag-and-last-modified", {}, "id=b&cc=max-age%3D60&etag=%22v1%22&lm=1", ()),
    ("vary-accept-encoding", {}, "id=c&cc=max-age%3D60&vary=Accept-Encoding",
     ("Accept-Encoding: gzip",)),
    ("cached-404", {}, "id=d&cc=max-age%3D60&status=404", ()),
    ("tags-stripped", {"tags_header": "Surrogate-Key"}, "id=e&cc=max-age%3D60&tags=t1", ()),
    ("key-headers", {"key": {"headers": ["X-Tenant"]}}, "id=f&cc=max-age%3D60",
     ("X-Tenant: acme",)),
    ("key-query-subset", {"key": {"query": ["id", "cc"]}}, "id=g&cc=max-age%3D60&junk=1", ()),
    ("larger-body", {}, "id=h&cc=max-age%3D60&n=5000", ()),
    ("upstream-age", {}, "id=i&cc=max-age%3D600&expires=900", ()),
]  # fmt: skip


@pytest.mark.parametrize(("cache", "query", "extra"), [c[1:] for c in IDENTICAL],
                         ids=[c[0] for c in IDENTICAL])  # fmt: skip
async def test_fast_and_full_path_send_the_same_bytes(
    gateway: GatewayFactory, up: int, cache: dict[str, Any], query: str, extra: tuple[str, ...]
) -> None:
    gw, clock = await trusted_gateway(gateway, up, cache)
    assert route(gw).cache_fast is cache_filter(gw)
    head = request(f"/r?{query}", *extra)
    await exchange_raw(gw.port, head)  # the miss, stored
    counts = cache_filter(gw).counts
    for advance_s in (0.0, 2.5, 0.25):  # Age and ttl move; both paths must follow
        clock.now += advance_s
        before = counts["hit"], counts["served_bytes"]
        fast_raw, slow_raw = await both_paths(gw, head)
        assert b"Cache-Status: gateway; hit; ttl=" in fast_raw
        assert without_date(fast_raw) == without_date(slow_raw)
        assert re.search(rb"\r\nDate: [^\r]+GMT\r\n", fast_raw) is not None
        body = fast_raw.partition(b"\r\n\r\n")[2]
        assert (counts["hit"] - before[0], counts["served_bytes"] - before[1]) == (2, 2 * len(body))
    assert [e.fast is not None for e in entries(gw)] == [True]  # the fast path did answer


# (id, request head given the target, what the answer starts with)
FALLBACKS = [
    ("head", lambda t: request(t, method="HEAD"), b"HTTP/1.1 200"),
    ("if-none-match", lambda t: request(t, 'If-None-Match: "v1"'), b"HTTP/1.1 304"),
    ("if-modified-since", lambda t: request(t, "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"),
     b"HTTP/1.1 304"),
    ("request-max-age", lambda t: request(t, "Cache-Control: max-age=3600"), b"HTTP/1.1 200"),
    ("http-1.0", lambda t: request(t, version="1.0"), b"HTTP/1.0 200"),
    ("connection-close", lambda t: request(t, "Connection: close"), b"HTTP/1.1 200"),
    ("get-with-body", lambda t: request(t, "Content-Length: 2") + "{}", b"HTTP/1.1 200"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "status_line"), [c[1:] for c in FALLBACKS],
                         ids=[c[0] for c in FALLBACKS])  # fmt: skip
async def test_what_the_fast_path_leaves_to_the_chain(
    gateway: GatewayFactory, up: int, hits: Counter[str], make: Any, status_line: bytes
) -> None:
    gw, _ = await trusted_gateway(gateway, up)
    target = "/r?id=a&cc=max-age%3D60&etag=%22v1%22&lm=1"
    await exchange_raw(gw.port, request(target))
    fast_raw, slow_raw = await both_paths(gw, make(target))
    assert fast_raw.startswith(status_line)
    assert b"Cache-Status: gateway; hit" in fast_raw and hits["a"] == 1
    assert without_date(fast_raw) == without_date(slow_raw)
    assert [e.fast for e in entries(gw)] == [None]  # answered by the chain both times


async def test_stale_and_range_go_upstream(
    gateway: GatewayFactory, up: int, hits: Counter[str]
) -> None:
    gw, clock = await trusted_gateway(gateway, up)
    target = "/r?id=a&cc=max-age%3D60"
    await exchange_raw(gw.port, request(target))
    ranged = await exchange_raw(gw.port, request(target, "Range: bytes=0-1"))
    assert b"Cache-Status: gateway; fwd=request" in ranged and hits["a"] == 2
    clock.now += 61
    stale = await exchange_raw(gw.port, request(target))
    assert b"Cache-Status: gateway; fwd=stale; fwd-status=200" in stale and hits["a"] == 3
    fresh = await exchange_raw(gw.port, request(target))
    assert b"Cache-Status: gateway; hit" in fresh and fresh.endswith(b"a:3:")


# Names of FILTER_ORDER before the cache: any of them on a route turns the fast path off.
BEFORE = FILTER_ORDER[: FILTER_ORDER.index("cache")]
AFTER = FILTER_ORDER[FILTER_ORDER.index("cache") + 1 :]


@pytest.mark.parametrize("name", BEFORE)
def test_a_filter_before_the_cache_turns_the_fast_path_off(name: str) -> None:
    cache = CacheFilter(Cache(), MemoryStore(1 << 20), route="api")
    other = CacheFilter(Cache(), MemoryStore(1 << 20), route="other")
    filters: dict[str, Filter] = {"cache": cache, name: other}
    assert fast_path_filter(filters) is None


@pytest.mark.parametrize("name", AFTER)
def test_filters_inside_the_cache_keep_the_fast_path(name: str) -> None:
    cache = CacheFilter(Cache(), MemoryStore(1 << 20), route="api")
    other = CacheFilter(Cache(), MemoryStore(1 << 20), route="other")
    assert fast_path_filter({"cache": cache, name: other}) is cache
    assert fast_path_filter({name: other}) is None  # no cache: nothing to answer from


# (id, route sections put before the cache by FILTER_ORDER, a request header, a line
# the hit must carry that only that filter adds)
CONFIGURED_BEFORE = [
    ("headers", {"headers": {"response": {"set": {"X-Edge": "yes"}}}}, (), b"\r\nX-Edge: yes"),
    ("cors", {"cors": {"origins": ["https://a.example"]}}, ("Origin: https://a.example",),
     b"\r\nAccess-Control-Allow-Origin: https://a.example"),
    ("screening", {"screening": {}}, (), None),
    ("size", {"limits": {"max_body_bytes": 1024}}, (), None),
]  # fmt: skip


@pytest.mark.parametrize(("section", "extra", "line"), [c[1:] for c in CONFIGURED_BEFORE],
                         ids=[c[0] for c in CONFIGURED_BEFORE])  # fmt: skip
async def test_configured_routes_with_a_filter_before_the_cache_take_the_chain(
    gateway: GatewayFactory, up: int, section: dict[str, Any], extra: tuple[str, ...],
    line: bytes | None,
) -> None:  # fmt: skip
    cfg = gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{up}"]},
        routes=[{"name": "api", "upstream": "up", "cache": {}, **section}],
    )
    gw = await gateway(cfg)
    assert route(gw).cache_fast is None
    target = "/r?id=a&cc=max-age%3D60"
    for _ in range(2):
        raw = await exchange_raw(gw.port, request(target, *extra))
    assert b"Cache-Status: gateway; hit" in raw
    if line is not None:
        assert line in raw
    assert [e.fast for e in entries(gw)] == [None]


async def test_metrics_and_counters_count_fast_hits(gateway: GatewayFactory, up: int) -> None:
    gw, _ = await trusted_gateway(gateway, up)
    target = "/r?id=a&cc=max-age%3D60"
    requests = metrics().requests.labels("api", "GET", "2xx", "", "", "")
    REQUESTS.flush()
    before = requests._value.get()
    for _ in range(3):
        await exchange_raw(gw.port, request(target))
    REQUESTS.flush()
    # the miss has its upstream in the labels; the two hits have none
    assert requests._value.get() - before == 2
    assert (cache_filter(gw).counts["hit"], cache_filter(gw).counts["miss"]) == (2, 1)
    assert [e.fast is not None for e in entries(gw)] == [True]


async def test_access_log_lines_match_the_full_path(
    gateway: GatewayFactory, up: int, tmp_path: Path
) -> None:
    out = tmp_path / "access.log"
    section = {"mode": "full", "output": str(out), "include_query": True}
    gw, _ = await start(gateway, up, trusted_proxies=["127.0.0.1/32"], access_log=section)
    head = request("/r?id=a&cc=max-age%3D60")
    await exchange_raw(gw.port, head)  # the miss
    await both_paths(gw, head)
    miss, fast, slow = lines_of(out, 3)
    for line in (fast, slow):
        del line["time"], line["duration_ms"]
    assert fast == slow
    assert (fast["cache"], fast["bytes_out"], miss["cache"]) == ("hit", 4, "miss")
