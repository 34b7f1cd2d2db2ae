"""Hits: the pre-serialised head is used only while nobody edited the reply's headers."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest
from multidict import CIMultiDict

from gateway.cache.answer import CachedBody, answer
from gateway.cache.policy import CacheControl
from gateway.cache.store import Entry
from gateway.exchange import Exchange
from tests.cache.support import get, start
from tests.conftest import GatewayFactory
from tests.support import free_port, gateway_config


def exchange(**headers: str) -> Exchange:
    return Exchange(
        method="GET",
        path="/p",
        query="",
        headers=CIMultiDict(headers),
        host="h",
        scheme="http",
        client_ip="127.0.0.1",
        client_port=1,
        request_id="rid",
        route=cast(Any, None),
        body=None,
        content_length=None,
    )


def stored() -> Entry:
    return Entry(
        primary="h/p\x00api\x00http\x00",
        key="h/p\x00api\x00http\x00\x01",
        status=200,
        reason="OK",
        headers=[("Content-Type", "text/plain"), ("ETag", '"v1"'), ("X-Up", "1")],
        body=b"hello",
        cc=CacheControl(),
        lifetime=60,
        stored_at=100,
        age0=2,
    )


def test_head_is_the_entry_lines_plus_age_and_cache_status() -> None:
    reply = answer(exchange(), stored(), 110, "hit; ttl=48")
    body = cast(CachedBody, reply.stream)
    assert body.head_for(reply.headers) == (
        b'Content-Type: text/plain\r\nETag: "v1"\r\nX-Up: 1\r\n'
        b"Age: 12\r\nCache-Status: gateway; hit; ttl=48\r\n"
    )
    assert body.body() == b"hello"


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.add("X-Added", "1"),
        lambda h: h.popall("X-Up"),
        lambda h: h.__setitem__("Age", "0"),
    ],
    ids=["added", "removed", "replaced"],
)
def test_any_edit_turns_the_fast_path_off(edit: Any) -> None:
    reply = answer(exchange(), stored(), 110, "hit")
    edit(reply.headers)
    assert cast(CachedBody, reply.stream).head_for(reply.headers) is None


def test_conditional_is_a_304_without_a_body() -> None:
    reply = answer(exchange(**{"If-None-Match": 'W/"v1"'}), stored(), 110, "hit")
    assert (reply.status, reply.stream, reply.headers["ETag"]) == (304, None, '"v1"')
    assert "Content-Type" not in reply.headers


async def test_a_response_rule_applies_to_hits(
    gateway: GatewayFactory, up: int, hits: Counter[str]
) -> None:
    """An outer filter (header rules) edits a hit's headers: they go out edited."""
    cfg = gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{up}"]},
        routes=[
            {
                "name": "api",
                "upstream": "up",
                "cache": {},
                "headers": {"response": {"remove": ["ETag"], "set": {"X-Edge": "yes"}}},
            }
        ],
    )
    gw = await gateway(cfg)
    for _ in range(2):
        _, h, body = await get(gw, id="a", cc="max-age=60", etag='"e"')
    assert h["Cache-Status"].startswith("gateway; hit") and hits["a"] == 1
    assert ("ETag" in h, h["X-Edge"], h.getall("Content-Length"), body) == (
        False,
        "yes",
        ["4"],
        b"a:1:",
    )


async def test_hits_go_out_on_the_fast_path_with_request_id_and_date(
    gateway: GatewayFactory, up: int
) -> None:
    gw, _ = await start(gateway, up)
    await get(gw, id="a", cc="max-age=60")
    _, h, body = await get(gw, id="a", cc="max-age=60")
    assert h["Cache-Status"].startswith("gateway; hit")
    assert len(h["X-Request-ID"]) == 32 and h["Date"].endswith("GMT")
    assert (h.getall("Content-Length"), h["Age"], body) == (["4"], "0", b"a:1:")
