"""CORS per route, checked against the Fetch standard's CORS protocol (section 3.2).

The filters are built from a config as a load builds them (`route_filters`) and chained
with `compile_chain`, so the auth and rate-limit filters sit inside CORS as they do in
the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gateway.exchange import Reply
from gateway.pipeline import compile_chain
from gateway.runtime import route_filters
from gateway.store.stores import RateLimitStores
from tests.auth.support import Terminal, exchange, key_hash, route_config

APP = "https://app.example.com"
CORS: dict[str, Any] = {
    "origins": [APP, "https://*.example.org", "http://localhost:3000"],
    "methods": ["GET", "POST", "PUT", "DELETE"],
    "headers": ["Content-Type", "X-Trace"],
    "credentials": True,
    "max_age": "10m",
    "expose_headers": ["X-Request-ID", "RateLimit"],
}


async def send(
    cors: dict[str, Any],
    headers: Sequence[tuple[str, str]],
    method: str = "GET",
    extra: dict[str, Any] | None = None,
    upstream_headers: Sequence[tuple[str, str]] = (),
) -> tuple[Reply, Terminal]:
    rcfg = route_config({"cors": cors, **(extra or {})})
    t = Terminal(upstream_headers)
    chain = compile_chain(route_filters(rcfg, RateLimitStores()), t)
    return await chain(exchange(rcfg, headers, method=method)), t


def preflight(
    origin: str, method: str = "PUT", headers: str | None = None
) -> list[tuple[str, str]]:
    h = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers is not None:
        h.append(("Access-Control-Request-Headers", headers))
    return h


# (id, origin, requested method, requested headers, allowed)
PREFLIGHTS = [
    ("exact-origin", APP, "PUT", "content-type", True),
    ("wildcard-subdomain", "https://shop.example.org", "DELETE", None, True),
    ("wildcard-deep-subdomain", "https://a.b.example.org", "PUT", None, True),
    ("wildcard-not-apex", "https://example.org", "PUT", None, False),
    ("wildcard-other-scheme", "http://shop.example.org", "PUT", None, False),
    ("wildcard-other-port", "https://shop.example.org:8443", "PUT", None, False),
    ("wildcard-suffix-trick", "https://evilexample.org", "PUT", None, False),
    ("exact-with-port", "http://localhost:3000", "POST", "x-trace, content-type", True),
    ("unknown-origin", "https://evil.example", "PUT", None, False),
    ("null-origin", "null", "PUT", None, False),
    ("method-not-allowed", APP, "PATCH", None, False),
    ("safelisted-method", APP, "HEAD", None, True),
    ("header-not-allowed", APP, "PUT", "x-other", False),
    ("authorization-not-listed", APP, "PUT", "authorization", False),
]


@pytest.mark.parametrize(
    ("origin", "method", "req_headers", "allowed"),
    [c[1:] for c in PREFLIGHTS],
    ids=[c[0] for c in PREFLIGHTS],
)
async def test_preflight(origin: str, method: str, req_headers: str | None, allowed: bool) -> None:
    reply, t = await send(CORS, preflight(origin, method, req_headers), method="OPTIONS")
    assert t.calls == 0  # answered by the gateway, never the upstream
    h = reply.headers
    assert "Origin" in h["Vary"]
    if allowed:
        assert reply.status == 204
        assert h["Access-Control-Allow-Origin"] == origin  # reflected: credentials
        assert h["Access-Control-Allow-Credentials"] == "true"
        assert h["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE"
        assert h["Access-Control-Max-Age"] == "600"
        if req_headers:
            assert h["Access-Control-Allow-Headers"] == req_headers.replace(" ", "").replace(
                ",", ", "
            )
    else:
        assert reply.status == 403
        assert not [k for k in h if k.lower().startswith("access-control-")]


async def test_star_without_credentials() -> None:
    cors = {"origins": ["*"], "methods": ["*"], "headers": ["*"]}
    reply, _ = await send(
        cors, preflight("https://any.site", "PATCH", "x-a, x-b"), method="OPTIONS"
    )
    h = reply.headers
    assert reply.status == 204
    assert h["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in h
    assert h["Access-Control-Allow-Methods"] == "PATCH"
    assert h["Access-Control-Allow-Headers"] == "x-a, x-b"
    # Fetch: the '*' header wildcard never covers Authorization.
    reply, _ = await send(cors, preflight("https://any.site", "GET", "authorization"), "OPTIONS")
    assert reply.status == 403
    # An actual request: '*', and no Vary (the answer does not depend on the origin).
    reply, t = await send(cors, [("Origin", "https://any.site")])
    assert t.calls == 1 and reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in reply.headers


async def test_actual_request_allowed_origin() -> None:
    upstream = [("Access-Control-Allow-Origin", "*"), ("Vary", "Accept-Encoding")]
    reply, t = await send(CORS, [("Origin", APP)], upstream_headers=upstream)
    h = reply.headers
    assert t.calls == 1 and reply.status == 200
    assert h.getall("Access-Control-Allow-Origin") == [APP]  # the upstream's own removed
    assert h["Access-Control-Allow-Credentials"] == "true"
    assert h["Access-Control-Expose-Headers"] == "X-Request-ID, RateLimit"
    assert h.getall("Vary") == ["Accept-Encoding", "Origin"]


@pytest.mark.parametrize(
    "headers",
    [[("Origin", "https://evil.example")], []],
    ids=["disallowed-origin", "no-origin"],
)
async def test_no_cors_headers_without_an_allowed_origin(headers: list[tuple[str, str]]) -> None:
    upstream = [("Access-Control-Allow-Origin", "https://evil.example")]
    reply, t = await send(CORS, headers, upstream_headers=upstream)
    assert t.calls == 1 and reply.status == 200
    assert not [k for k in reply.headers if k.lower().startswith("access-control-")]
    assert reply.headers["Vary"] == "Origin"  # caches must key on Origin anyway


async def test_options_without_request_method_is_not_a_preflight() -> None:
    reply, t = await send(CORS, [("Origin", APP)], method="OPTIONS")
    assert t.calls == 1 and reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == APP


async def test_inner_refusals_carry_cors_headers() -> None:
    """A 401 from auth and a 429 from the rate limiter are readable by the page."""
    extra = {
        "auth": {"api_keys": {"keys": [{"name": "web", "hash": key_hash("k-web")}]}},
        "rate_limits": [{"name": "per-key", "rate": "1/min", "key": ["principal"]}],
    }
    rcfg = route_config({"cors": CORS, **extra})
    t = Terminal()
    chain = compile_chain(route_filters(rcfg, RateLimitStores()), t)
    statuses = []
    for key in (None, "k-web", "k-web"):
        headers = [("Origin", APP)] + ([("X-API-Key", key)] if key else [])
        reply = await chain(exchange(rcfg, headers))
        statuses.append(reply.status)
        assert reply.headers["Access-Control-Allow-Origin"] == APP
        assert reply.headers["Vary"] == "Origin"
    assert statuses == [401, 200, 429]
    # The preflight itself needs no key.
    reply = await chain(exchange(rcfg, preflight(APP, "PUT", "x-trace"), method="OPTIONS"))
    assert reply.status == 204 and t.calls == 1
