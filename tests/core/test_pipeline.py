"""The filter pipeline: fixed order, short-circuits, chains compiled once."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.config.load import validate_data
from gateway.exchange import Exchange, Reply
from gateway.pipeline import FILTER_ORDER, Next, compile_chain
from gateway.routing import Route


def exchange() -> Exchange:
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"u": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [{"name": "r", "upstream": "u"}],
        }
    )
    return Exchange(
        method="GET",
        path="/",
        query="",
        headers=CIMultiDict(),
        host="h",
        scheme="http",
        client_ip="127.0.0.1",
        client_port=1,
        request_id="id",
        route=Route(cfg.routes[0]),
        body=None,
        content_length=None,
    )


class Recorder:
    """A filter that records its name, then calls on or answers `status` itself."""

    def __init__(self, name: str, log: list[str], status: int | None = None) -> None:
        self.name = name
        self.log = log
        self.status = status

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        self.log.append(self.name)
        if self.status is not None:
            return Reply(self.status)
        reply = await next(ex)
        self.log.append(f"/{self.name}")
        return reply


async def test_filters_run_in_fixed_order_whatever_the_mapping_order() -> None:
    log: list[str] = []

    async def terminal(ex: Exchange) -> Reply:
        log.append("upstream")
        return Reply(200)

    names = ["compression", "ratelimit", "metrics", "size"]  # deliberately shuffled
    chain = compile_chain({n: Recorder(n, log) for n in names}, terminal)
    reply = await chain(exchange())
    assert reply.status == 200
    ordered = [n for n in FILTER_ORDER if n in names]
    assert log == [*ordered, "upstream", *[f"/{n}" for n in reversed(ordered)]]


async def test_a_filter_answering_itself_stops_the_chain() -> None:
    log: list[str] = []

    async def terminal(ex: Exchange) -> Reply:
        log.append("upstream")
        return Reply(200)

    chain = compile_chain(
        {"size": Recorder("size", log, status=413), "cache": Recorder("cache", log)}, terminal
    )
    assert (await chain(exchange())).status == 413
    assert log == ["size"]


async def test_no_filters_is_the_terminal_itself() -> None:
    async def terminal(ex: Exchange) -> Reply:
        return Reply(204)

    assert compile_chain({}, terminal) is terminal


def test_unknown_filter_name_is_refused() -> None:
    async def terminal(ex: Exchange) -> Reply:
        return Reply(200)

    with pytest.raises(ValueError, match="unknown filter"):
        compile_chain({"telepathy": Recorder("x", [])}, terminal)


def test_reply_error_body_is_small_json_with_request_id() -> None:
    reply = Reply.error(502, "bad_gateway", "upstream went away", "rid-1")
    assert reply.status == 502
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == (
        b'{"error":"bad_gateway","message":"upstream went away","request_id":"rid-1"}\n'
    )
