"""The cache end to end: a real gateway, a real upstream that counts its hits, a fake clock.

Every gateway test runs twice (`store_args`): on the memory store and on a real
redis-server (tests/cache/support.py describes the upstream and the helpers).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from gateway.cache.policy import CacheControl
from gateway.cache.store import Entry, MemoryStore
from tests.cache.support import cache_filter, cache_upstream, get, start
from tests.conftest import GatewayFactory
from tests.support import free_port, serve_app

StoreArgs = dict[str, Any]


# (id, query, request headers, upstream hits after two requests, detail of the first)
STORABLE = [
    ("max-age", {"cc": "max-age=60"}, {}, 1, "stored"),
    ("s-maxage", {"cc": "s-maxage=60"}, {}, 1, "stored"),
    ("expires", {"expires": "60"}, {}, 1, "stored"),
    ("no-store", {"cc": "max-age=60, no-store"}, {}, 2, "detail=no-store"),
    ("private", {"cc": "private, max-age=60"}, {}, 2, "detail=private"),
    ("no-freshness", {}, {}, 2, "detail=stale"),
    ("expired-expires", {"expires": "0"}, {}, 2, "detail=stale"),
    ("authorization", {"cc": "max-age=60"}, {"Authorization": "x"}, 2, "detail=authorization"),
    ("auth-public", {"cc": "public, max-age=60"}, {"Authorization": "x"}, 1, "stored"),
    ("auth-s-maxage", {"cc": "s-maxage=60"}, {"Authorization": "x"}, 1, "stored"),
    (
        "auth-must-revalidate",
        {"cc": "max-age=60, must-revalidate"},
        {"Authorization": "x"},
        1,
        "stored",
    ),
    ("vary-star", {"cc": "max-age=60", "vary": "*"}, {}, 2, "detail=vary-star"),
    ("set-cookie", {"cc": "max-age=60", "cookie": "1"}, {}, 2, "detail=set-cookie"),
    ("500-no-freshness", {"status": "500"}, {}, 2, "detail=status"),
    ("500-explicit", {"status": "500", "cc": "max-age=60"}, {}, 1, "stored"),
    ("404-default", {"status": "404", "cc": "max-age=60"}, {}, 1, "stored"),
    ("too-big", {"cc": "max-age=60", "n": "5000"}, {}, 2, "detail=too-big"),
]


@pytest.mark.parametrize(
    ("query", "req", "upstream_hits", "detail"),
    [c[1:] for c in STORABLE],
    ids=[c[0] for c in STORABLE],
)
async def test_storable(
    gateway: GatewayFactory,
    store_args: StoreArgs,
    up: int,
    hits: Counter[str],
    query: dict[str, str],
    req: dict[str, str],
    upstream_hits: int,
    detail: str,
) -> None:
    gw, _ = await start(gateway, up, {"max_entry_bytes": 4096}, **store_args)
    _, h1, b1 = await get(gw, headers=req, id="a", **query)
    assert h1["Cache-Status"].startswith("gateway; fwd=miss")
    assert h1["Cache-Status"].endswith(detail)
    _, h2, b2 = await get(gw, headers=req, id="a", **query)
    assert hits["a"] == upstream_hits
    if upstream_hits == 1:
        assert b2 == b1
        assert h2["Cache-Status"].startswith("gateway; hit")


async def test_freshness_and_age_follow_the_clock(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, clock = await start(gateway, up, **store_args)
    await get(gw, id="a", cc="max-age=10")
    clock.now += 4
    _, h, _ = await get(gw, id="a", cc="max-age=10")
    assert (h["Age"], h["Cache-Status"]) == ("4", "gateway; hit; ttl=6")
    clock.now += 7
    _, h, _ = await get(gw, id="a", cc="max-age=10")
    assert hits["a"] == 2
    assert h["Cache-Status"] == "gateway; fwd=stale; fwd-status=200; stored"


async def test_request_no_cache_and_other_methods(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    await get(gw, id="a", cc="max-age=60")
    _, h, _ = await get(gw, headers={"Cache-Control": "no-cache"}, id="a", cc="max-age=60")
    assert h["Cache-Status"].startswith("gateway; fwd=stale")
    _, h, _ = await get(gw, headers={"Range": "bytes=0-1"}, id="a", cc="max-age=60")
    assert h["Cache-Status"] == "gateway; fwd=request"
    assert hits["a"] == 3


async def test_heuristic_default_ttl(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, clock = await start(gateway, up, {"default_ttl": "30s"}, **store_args)
    await get(gw, id="a")
    clock.now += 29
    await get(gw, id="a")
    assert hits["a"] == 1


@pytest.mark.parametrize("cc", ["no-cache", "max-age=0, must-revalidate", "max-age=5"])
async def test_revalidation_with_etag_refreshes_the_entry(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str], cc: str
) -> None:
    gw, clock = await start(gateway, up, **store_args)
    q = {"id": "a", "cc": cc, "etag": '"v1"', "conditional": "1"}
    _, _, b1 = await get(gw, **q)
    clock.now += 10
    status, h, b2 = await get(gw, **q)
    assert (status, b2) == (200, b1)
    assert h["Cache-Status"] == "gateway; fwd=stale; fwd-status=304"
    assert hits["conditional"] == 1


async def test_conditional_client_request_answered_304_from_cache(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    q = {"id": "a", "cc": "max-age=60", "etag": '"v1"', "lm": "1"}
    await get(gw, **q)
    status, h, body = await get(gw, headers={"If-None-Match": 'W/"v1"'}, **q)
    assert (status, body, h["ETag"]) == (304, b"", '"v1"')
    status, _, _ = await get(gw, headers={"If-None-Match": '"v2"'}, **q)
    assert status == 200
    ims = formatdate(10, usegmt=True)
    status, _, _ = await get(gw, headers={"If-Modified-Since": ims}, **q)
    assert status == 304
    assert hits["a"] == 1


async def test_vary_keys_on_the_listed_request_headers(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    q = {"id": "a", "cc": "max-age=60", "vary": "Accept-Language"}
    _, _, en = await get(gw, headers={"Accept-Language": "en"}, **q)
    _, h, fr = await get(gw, headers={"Accept-Language": "fr"}, **q)
    assert "fwd=vary-miss" in h["Cache-Status"]
    _, _, en2 = await get(gw, headers={"Accept-Language": "en"}, **q)
    _, _, fr2 = await get(gw, headers={"Accept-Language": "fr"}, **q)
    assert (en2, fr2) == (en, fr) and en != fr
    assert hits["a"] == 2


@pytest.mark.parametrize(
    ("key", "second", "upstream_hits"),
    [
        ({"query": "none"}, {"other": "1"}, 1),
        ({"query": ["id"]}, {"other": "1"}, 1),
        ({"query": "all"}, {"other": "1"}, 2),
    ],
    ids=["none", "listed", "all"],
)
async def test_key_query_parameters(
    gateway: GatewayFactory,
    store_args: StoreArgs,
    up: int,
    hits: Counter[str],
    key: dict[str, Any],
    second: dict[str, str],
    upstream_hits: int,
) -> None:
    gw, _ = await start(gateway, up, {"key": key}, **store_args)
    await get(gw, id="a", cc="max-age=60")
    await get(gw, id="a", cc="max-age=60", **second)
    assert hits["a"] == upstream_hits


async def test_key_headers(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, {"key": {"headers": ["X-Tenant"]}}, **store_args)
    for tenant in ("t1", "t2", "t1"):
        await get(gw, headers={"X-Tenant": tenant}, id="a", cc="max-age=60")
    assert hits["a"] == 2


async def test_100_concurrent_misses_reach_the_upstream_once(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    async with aiohttp.ClientSession() as s:

        async def one() -> bytes:
            async with s.get(gw.url + "/r?id=c&cc=max-age%3D60") as r:
                return await r.read()

        bodies = await asyncio.gather(*(one() for _ in range(100)))
    assert hits["c"] == 1
    assert set(bodies) == {b"c:1:"}


async def test_stale_if_error_serves_stale_when_the_upstream_is_down(
    gateway: GatewayFactory, store_args: StoreArgs, hits: Counter[str]
) -> None:
    port = free_port()
    async with serve_app(cache_upstream(hits), port=port):
        gw, clock = await start(gateway, port, **store_args)
        _, _, b1 = await get(gw, id="a", cc="max-age=10, stale-if-error=60")
    clock.now += 30  # stale, within stale-if-error; the upstream is gone
    status, h, b2 = await get(gw, id="a", cc="max-age=10, stale-if-error=60")
    assert (status, b2) == (200, b1)
    assert "detail=stale-if-error" in h["Cache-Status"]
    clock.now += 60  # beyond the window: the error goes through
    status, _, _ = await get(gw, id="a")
    assert status >= 500


async def test_stale_if_error_on_5xx_and_not_with_must_revalidate(
    gateway: GatewayFactory, store_args: StoreArgs, up: int
) -> None:
    gw, clock = await start(gateway, up, {"key": {"query": ["id"]}}, **store_args)
    await get(gw, id="a", cc="max-age=1, stale-if-error=60")
    await get(gw, id="b", cc="max-age=1, stale-if-error=60, must-revalidate")
    clock.now += 5
    # The key is the id alone: the same entries, and this time the upstream says 503.
    status, h, _ = await get(gw, id="a", cc="max-age=1, stale-if-error=60", status="503")
    assert status == 200 and "fwd-status=503" in h["Cache-Status"]
    status, _, _ = await get(gw, id="b", status="503")
    assert status == 503


async def test_stale_while_revalidate_refreshes_in_the_background(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, clock = await start(gateway, up, **store_args)
    q = {"id": "a", "cc": "max-age=10, stale-while-revalidate=60"}
    _, _, b1 = await get(gw, **q)
    clock.now += 20
    _, h, b2 = await get(gw, **q)
    assert b2 == b1 and "detail=stale-while-revalidate" in h["Cache-Status"]
    await asyncio.gather(*cache_filter(gw).refreshing)
    await gw.worker.runtime.cache.flush()
    assert hits["a"] == 2
    _, h, b3 = await get(gw, **q)
    assert b3 == b"a:2:" and h["Cache-Status"].startswith("gateway; hit; ttl=")


async def test_head_is_answered_from_a_stored_get(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    await get(gw, id="a", cc="max-age=60")
    status, h, body = await get(gw, "HEAD", id="a", cc="max-age=60")
    assert (status, body, h["Content-Length"]) == (200, b"", "4")
    assert hits["a"] == 1


async def test_store_survives_a_reload(
    gateway: GatewayFactory, store_args: StoreArgs, up: int
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    store = gw.worker.runtime.cache
    from gateway.runtime import Runtime

    rt = Runtime.build(gw.worker.runtime.config, "x", previous=gw.worker.runtime)
    assert rt.cache is store


def test_memory_store_never_exceeds_its_bound() -> None:
    store = MemoryStore(100_000)
    for i in range(2000):
        body = b"x" * (i * 37 % 9000)
        store.store(
            Entry(
                primary=f"p{i}",
                key=f"p{i}\x01",
                status=200,
                reason="OK",
                headers=[("Content-Type", "text/plain")],
                body=body,
                cc=CacheControl(),
                lifetime=60,
                stored_at=0,
                age0=0,
            ),
        )
        assert store.bytes <= store.max_bytes
    assert store.evictions > 0 and len(store) > 5
    assert store.get("p1999\x01") is not None  # the newest survives, the oldest went
    assert store.get("p0\x01") is None
