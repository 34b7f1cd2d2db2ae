"""Shared pieces: a validated config with a bans section, the real filter chain
(bans -> size -> screening -> a terminal upstream) on a fake clock, and Exchanges
from a chosen client address and User-Agent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.config.load import validate_data
from gateway.config.model import Config
from gateway.exchange import Exchange, Reply
from gateway.filters.bans import BanGuard
from gateway.pipeline import Next, compile_chain
from gateway.routing import Route
from gateway.runtime import route_filters
from gateway.store.bans import BanStore
from gateway.store.stores import RateLimitStores
from tests.ratelimit.conftest import FakeClock

__all__ = ["ATTACK", "BENIGN", "Chain", "FakeClock", "config", "request"]

ATTACK = "id=" + "1%27%20or%20%271%27%3D%271"  # 1' or '1'='1: one screening block
BENIGN = "id=42"


def config(
    bans: dict[str, Any] | None,
    /,
    *,
    redis: str | None = None,
    prefix: str = "gw:rl:",
    **route: Any,
) -> Config:
    data: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "upstreams": {"up": {"endpoints": ["http://127.0.0.1:1"]}},
        "routes": [{"name": "api", "upstream": "up", "screening": {}, **route}],
    }
    if bans is not None:
        data["bans"] = bans
    if redis is not None:
        data["redis"] = {"url": redis, "key_prefix": prefix}
    return validate_data(data)


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ex: Exchange) -> Reply:
        self.calls += 1
        return Reply(200)


class Chain:
    """One route's compiled chain on a config, as Runtime.build compiles it."""

    def __init__(self, cfg: Config, clock: FakeClock, previous: BanStore | None = None) -> None:
        self.config = cfg
        self.clock = clock
        store = BanStore.for_config(cfg, previous, clock)
        self.store = store
        guard = BanGuard(cfg.bans, store) if cfg.bans and store else None
        self.upstream = Upstream()
        rcfg = cfg.routes[0]
        self.route = Route(rcfg)
        self.handler: Next = compile_chain(
            route_filters(rcfg, RateLimitStores(), guard), self.upstream
        )

    async def send(
        self, query: str = BENIGN, *, ip: str = "203.0.113.7", ua: str | None = None
    ) -> Reply:
        return await self.handler(request(self.route, query, ip=ip, ua=ua))

    async def statuses(self, queries: Sequence[str], ip: str = "203.0.113.7") -> list[int]:
        return [(await self.send(q, ip=ip)).status for q in queries]


def request(route: Route, query: str, *, ip: str, ua: str | None = None) -> Exchange:
    headers: CIMultiDict[str] = CIMultiDict([("Host", "api.example.com")])
    if ua is not None:
        headers["User-Agent"] = ua
    return Exchange(
        method="GET",
        path="/items",
        query=query,
        headers=headers,
        host="api.example.com",
        scheme="http",
        client_ip=ip,
        client_port=50000,
        request_id="req-1",
        route=route,
        body=None,
        content_length=None,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
