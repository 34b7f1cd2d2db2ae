"""Shared by the cache tests: an upstream that counts its hits, a fake clock, a gateway.

The upstream's `/r` (any path under `/`) answers with whatever the query asks for
(`cc`, `etag`, `lm`, `vary`, `status`, `expires`, `cookie`, `n` body bytes, `tags` as
Surrogate-Key, `ctags` as Cache-Tag) and answers a matching If-None-Match with 304.
The store's clock is replaced by a FakeClock, so freshness and Age are driven by the
test, never by sleeping. `start` runs the gateway on the memory store or on a real
redis-server (a fresh key prefix per gateway, so tests sharing the server are apart).
"""

from __future__ import annotations

import uuid
from collections import Counter
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.filters.cache import CacheFilter
from tests.conftest import GatewayFactory, InProcessGateway
from tests.support import FakeClock, free_port, gateway_config

BACKENDS = ("memory", "redis")


def cache_upstream(hits: Counter[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        q = request.query
        hits[q.get("id", "")] += 1
        if "conditional" in q and request.headers.get("If-None-Match"):
            hits["conditional"] += 1
        etag = q.get("etag")
        headers: dict[str, str] = {}
        for name, key in (
            ("Cache-Control", "cc"),
            ("ETag", "etag"),
            ("Vary", "vary"),
            ("Surrogate-Key", "tags"),
            ("Cache-Tag", "ctags"),
        ):
            if key in q:
                headers[name] = q[key]
        if "lm" in q:
            headers["Last-Modified"] = formatdate(0, usegmt=True)
        if "expires" in q:
            headers["Date"] = formatdate(1_000_000, usegmt=True)
            headers["Expires"] = formatdate(1_000_000 + int(q["expires"]), usegmt=True)
        if "cookie" in q:
            headers["Set-Cookie"] = "session=1"
        if etag is not None and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        status = int(q.get("status", "200"))
        body = f"{q.get('id', '')}:{hits[q.get('id', '')]}:".encode()
        body += b"x" * int(q.get("n", "0"))
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


def store_config(backend: str, redis_url: str | None, timeout: str = "2s") -> dict[str, Any]:
    """The cache_store section; Redis calls get a timeout a loaded test machine meets."""
    if backend == "memory":
        return {}
    assert redis_url is not None
    prefix = f"gwt:{uuid.uuid4().hex[:12]}:"
    redis = {"url": redis_url, "key_prefix": prefix, "timeout": timeout}
    return {"cache_store": {"backend": "redis", "redis": redis}}


async def start(
    gateway: GatewayFactory,
    port: int,
    cache: dict[str, Any] | None = None,
    *,
    backend: str = "memory",
    redis_url: str | None = None,
    redis_timeout: str = "2s",
    **extra: Any,
) -> tuple[InProcessGateway, FakeClock]:
    cfg = gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{port}"]},
        routes=[{"name": "api", "upstream": "up", "cache": cache or {}}],
    )
    cfg.update(store_config(backend, redis_url, redis_timeout))
    cfg.update(extra)
    gw = await gateway(cfg)
    clock = FakeClock()
    gw.worker.runtime.cache.clock = clock
    return gw, clock


async def get(
    gw: InProcessGateway,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    path: str = "/r",
    **q: str,
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gw.url + path + "?" + urlencode(q), headers=headers or {}) as r,
    ):
        body = await r.read()
    await gw.worker.runtime.cache.flush()  # a Redis write finishes after the response
    return r.status, r.headers, body


def cache_filter(gw: InProcessGateway) -> CacheFilter:
    step: Any = gw.worker.runtime.table.routes[0].handler
    while step.__closure__ is not None and "f" in step.__code__.co_freevars:
        cells = dict(zip(step.__code__.co_freevars, step.__closure__, strict=True))
        f = cells["f"].cell_contents
        if isinstance(f, CacheFilter):
            return f
        step = cells["nxt"].cell_contents
    raise AssertionError("no cache filter in the chain")
