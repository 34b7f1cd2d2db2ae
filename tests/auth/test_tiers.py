"""The principal and tier set by auth, as the rate limiter keys and sizes buckets on them
(route_filters + compile_chain, memory store with a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.pipeline import Next, compile_chain
from gateway.runtime import route_filters
from gateway.store.stores import RateLimitStores
from tests.auth.support import Terminal, exchange, key_hash, route_config
from tests.ratelimit.conftest import FakeClock

KEYS = {"auth": {"api_keys": {"keys": [
    {"name": "gold-a", "hash": key_hash("ka"), "tier": "gold"},
    {"name": "gold-b", "hash": key_hash("kb"), "tier": "gold"},
    {"name": "free", "hash": key_hash("kf")},
]}}}  # fmt: skip


def chain(policies: list[dict[str, Any]]) -> tuple[Next, Any]:
    rcfg = route_config({**KEYS, "rate_limits": policies})
    stores = RateLimitStores(clock=FakeClock())
    return compile_chain(route_filters(rcfg, stores), Terminal()), rcfg


async def statuses(c: Next, rcfg: Any, key: str, n: int) -> list[int]:
    return [(await c(exchange(rcfg, [("X-API-Key", key)]))).status for _ in range(n)]


async def test_single_policy_bucket_per_principal_sized_by_tier() -> None:
    c, rcfg = chain([{"name": "k", "rate": "1/min", "key": ["principal"],
                      "tiers": {"gold": {"rate": "3/min"}}}])  # fmt: skip
    assert await statuses(c, rcfg, "ka", 4) == [200, 200, 200, 429]
    assert await statuses(c, rcfg, "kb", 4) == [200, 200, 200, 429]  # own bucket
    assert await statuses(c, rcfg, "kf", 2) == [200, 429]  # no tier: the policy's rate


@pytest.mark.parametrize(
    ("key", "policy_header"),
    [("ka", '"k";q=3;w=60, "ip";q=100;w=1'), ("kf", '"k";q=1;w=60, "ip";q=100;w=1')],
    ids=["gold", "no-tier"],
)
async def test_several_policies_report_the_tier_limit(key: str, policy_header: str) -> None:
    c, rcfg = chain([
        {"name": "k", "rate": "1/min", "key": ["principal"], "tiers": {"gold": "3/min"}},
        {"name": "ip", "rate": "100/s"},
    ])  # fmt: skip
    reply = await c(exchange(rcfg, [("X-API-Key", key)]))
    assert reply.status == 200
    assert reply.headers["RateLimit-Policy"] == policy_header
