"""Route table precedence and rewrites, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.config.load import validate_data
from gateway.routing import Route, RouteTable


def table(*routes: dict[str, Any]) -> RouteTable:
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"u": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [{"upstream": "u", **r} for r in routes],
        }
    )
    return RouteTable([Route(r) for r in cfg.routes])


def match(t: RouteTable, host: str, path: str, method: str = "GET", **headers: str) -> str | None:
    r = t.match(host, path, method, CIMultiDict(headers))
    return r.name if r else None


PRECEDENCE = table(
    {"name": "any-api", "match": {"path": {"prefix": "/api"}}},
    {"name": "wild-short", "match": {"hosts": ["*.example.com"]}},
    {"name": "wild-long", "match": {"hosts": ["*.eu.example.com"]}},
    {"name": "exact-post", "match": {"hosts": ["api.example.com"], "methods": ["POST"]}},
    {"name": "exact", "match": {"hosts": ["api.example.com"]}},
    {"name": "fallback"},
)


@pytest.mark.parametrize(
    ("host", "path", "method", "expected"),
    [
        ("api.example.com", "/api/x", "GET", "exact"),
        ("api.example.com", "/api/x", "POST", "exact-post"),
        ("x.eu.example.com", "/api/x", "GET", "wild-long"),
        ("x.us.example.com", "/", "GET", "wild-short"),
        ("a.b.c.example.com", "/", "GET", "wild-short"),
        ("example.com", "/api", "GET", "any-api"),
        ("example.com", "/other", "GET", "fallback"),
        ("", "/other", "GET", "fallback"),
    ],
    ids=[
        "exact-host-first",
        "exact-host-config-order",
        "longest-wildcard",
        "shorter-wildcard",
        "wildcard-any-depth",
        "apex-is-not-wildcard",
        "hostless-fallback",
        "no-host-header",
    ],
)
def test_precedence(host: str, path: str, method: str, expected: str) -> None:
    assert match(PRECEDENCE, host, path, method) == expected


@pytest.mark.parametrize(
    ("prefix", "path", "hit"),
    [
        ("/api", "/api", True),
        ("/api", "/api/", True),
        ("/api", "/api/v1", True),
        ("/api", "/apix", False),
        ("/api/", "/api/x", True),
        ("/api/", "/api", False),
        ("/", "/anything", True),
    ],
)
def test_prefix_is_segment_aware(prefix: str, path: str, hit: bool) -> None:
    t = table({"name": "p", "match": {"path": {"prefix": prefix}}})
    assert (match(t, "h", path) == "p") is hit


def test_header_rules_all_must_hold() -> None:
    t = table(
        {
            "name": "h",
            "match": {
                "headers": [
                    {"name": "X-Env", "value": "canary"},
                    {"name": "X-Debug", "present": True},
                ]
            },
        }
    )
    assert match(t, "h", "/", **{"X-Env": "canary", "X-Debug": "1"}) == "h"
    assert match(t, "h", "/", **{"X-Env": "canary"}) is None
    assert match(t, "h", "/", **{"x-env": "stable", "X-Debug": "1"}) is None


@pytest.mark.parametrize(
    ("rewrite", "path", "out"),
    [
        ({"strip_prefix": True}, "/api/v1/x", "/v1/x"),
        ({"strip_prefix": True}, "/api", "/"),
        ({"strip_prefix": True}, "/api/", "/"),
        ({"prefix": "/svc/"}, "/api/v1", "/svc/v1"),
        ({"prefix": "/"}, "/api/v1", "/v1"),
        ({"regex": "^/api/v(\\d+)/", "replacement": "/version/\\1/"}, "/api/v2/x", "/version/2/x"),
        ({"regex": "x+", "replacement": ""}, "/api/xx", "/api/"),
    ],
    ids=["strip", "strip-exact", "strip-slash", "new-prefix", "root-prefix", "regex", "regex-1st"],
)
def test_rewrite(rewrite: dict[str, Any], path: str, out: str) -> None:
    t = table({"name": "r", "match": {"path": {"prefix": "/api"}}, "rewrite": rewrite})
    route = t.match("h", path, "GET", CIMultiDict())
    assert route is not None and route.rewrite is not None
    assert route.rewrite(path) == out
