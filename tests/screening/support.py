"""Shared pieces: a route's filters from a validated config, a real Exchange, terminals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDict

from gateway.body import BodySource, BytesBody
from gateway.config.load import validate_data
from gateway.config.model import Route as RouteConfig
from gateway.exchange import Exchange, Reply
from gateway.filters.screening import ScreeningFilter
from gateway.filters.size import SizeFilter
from gateway.routing import Route


def route_config(**sections: Any) -> RouteConfig:
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"up": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [{"name": "api", "upstream": "up", **sections}],
        }
    )
    return cfg.routes[0]


def screening_filter(**screening: Any) -> ScreeningFilter:
    rcfg = route_config(screening=screening)
    assert rcfg.screening is not None
    return ScreeningFilter(rcfg.screening, route=rcfg.name)


def size_filter(**limits: Any) -> SizeFilter:
    rcfg = route_config(limits=limits)
    assert rcfg.limits is not None
    return SizeFilter(rcfg.limits, route=rcfg.name)


class Chunks:
    """A streamed body (as a chunked upload arrives); counts what was pulled."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.pulled = 0

    async def read(self) -> bytes:
        if not self.chunks:
            return b""
        self.pulled += 1
        return self.chunks.pop(0)


def exchange(
    *,
    method: str = "GET",
    path: str = "/api/items",
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | BodySource | None = None,
    content_length: int | None = None,
) -> Exchange:
    source: BodySource | None
    if isinstance(body, bytes):
        source = BytesBody(body)
        if content_length is None:
            content_length = len(body)
    else:
        source = body
    return Exchange(
        method=method,
        path=path,
        query=query,
        headers=CIMultiDict([("Host", "api.example.com"), *headers]),
        host="api.example.com",
        scheme="http",
        client_ip="203.0.113.7",
        client_port=50123,
        request_id="req-1",
        route=Route(route_config()),
        body=source,
        content_length=content_length,
    )


class Upstream:
    """The terminal: reads the whole body as the upstream pool would, answers 200."""

    def __init__(self) -> None:
        self.calls = 0
        self.body = b""

    async def __call__(self, ex: Exchange) -> Reply:
        self.calls += 1
        parts = []
        if ex.body is not None:
            while chunk := await ex.body.read():
                parts.append(chunk)
        self.body = b"".join(parts)
        return Reply(200)
