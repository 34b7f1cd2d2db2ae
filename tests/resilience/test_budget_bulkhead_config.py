"""Retry budget and bulkhead on their own; the resilience config: defaults, errors at paths."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.config.load import validate_data
from gateway.errors import ConfigErrors
from gateway.upstream import Bulkhead, RetryBudget, RetryPolicy


def test_budget_holds_its_share_over_the_window() -> None:
    budget = RetryBudget(RetryPolicy(budget_percent=20, min_retries_per_s=0))
    granted = 0
    for i in range(1000):
        budget.on_request(i * 0.005)  # 1000 requests over 5 s
        granted += budget.try_retry(i * 0.005)
    assert granted <= 200 and granted >= 195
    assert budget.exhausted == 1000 - granted


def test_budget_floor_lets_a_quiet_route_retry() -> None:
    budget = RetryBudget(RetryPolicy(budget_percent=20, min_retries_per_s=1))
    budget.on_request(0.0)
    assert sum(budget.try_retry(0.0) for _ in range(20)) == 10  # 1/s over the 10 s window


def test_budget_refills_as_the_window_moves() -> None:
    budget = RetryBudget(RetryPolicy(budget_percent=50, min_retries_per_s=0))
    for _ in range(10):
        budget.on_request(0.0)
    assert sum(budget.try_retry(0.0) for _ in range(10)) == 5
    assert not budget.try_retry(5.0)
    assert budget.try_retry(11.0) is False  # requests left the window too
    budget.on_request(11.0)
    budget.on_request(11.0)
    assert budget.try_retry(11.0)


async def test_bulkhead_limits_concurrency_and_queue() -> None:
    bh = Bulkhead(2, max_queued=1, queue_timeout_s=5.0)
    assert bh.enter() and bh.enter() and not bh.enter()
    waiter = asyncio.create_task(bh.wait())
    await asyncio.sleep(0)
    assert bh.queued == 1
    assert await bh.wait() is False  # queue full: at once
    assert bh.rejected == 1
    bh.leave()  # the slot passes to the waiter
    assert await waiter is True
    assert bh.active == 2
    bh.leave()
    bh.leave()
    assert bh.active == 0


async def test_bulkhead_queue_wait_times_out() -> None:
    bh = Bulkhead(1, max_queued=1, queue_timeout_s=0.01)
    assert bh.enter()
    assert await bh.wait() is False
    assert bh.rejected == 1


def base(upstream: dict[str, Any] | None = None, route: dict[str, Any] | None = None) -> Any:
    return {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "upstreams": {"svc": {"endpoints": ["http://127.0.0.1:9000"], **(upstream or {})}},
        "routes": [{"name": "r", "upstream": "svc", **(route or {})}],
    }


def test_defaults_are_safe() -> None:
    cfg = validate_data(base(), "t")
    up = cfg.upstreams["svc"]
    assert up.balancing.policy == "round_robin"
    assert up.breaker.enabled and up.breaker.consecutive_failures == 5
    assert up.breaker.failure_statuses == [502, 503, 504]
    assert up.health_check is None
    assert up.limits.max_concurrent is None
    r = cfg.routes[0].retries
    assert (r.attempts, r.budget_percent, r.per_try_timeout) == (1, 20.0, 0.0)


def test_full_shape_with_units() -> None:
    cfg = validate_data(
        base(
            {
                "balancing": {"policy": "consistent_hash", "hash_key": "client_ip"},
                "breaker": {"consecutive_failures": 3, "base_ejection": "500ms", "window": "1m"},
                "health_check": {"path": "/healthz", "interval": "2s", "timeout": "250ms"},
                "limits": {"max_concurrent": 100, "max_queued": 10},
            },
            {"retries": {"attempts": 2, "per_try_timeout": "300ms", "on_statuses": [503]}},
        ),
        "t",
    )
    up = cfg.upstreams["svc"]
    assert up.balancing.hash_key is not None and up.balancing.hash_key.client_ip is True
    assert (up.breaker.base_ejection, up.breaker.window) == (0.5, 60.0)
    assert up.health_check is not None and up.health_check.timeout == 0.25
    assert cfg.routes[0].retries.per_try_timeout == 0.3


ERRORS = [
    ("policy", {"balancing": {"policy": "random"}}, None, "upstreams.svc.balancing.policy"),
    ("hash-without-key", {"balancing": {"policy": "consistent_hash"}}, None,
     "upstreams.svc.balancing: policy 'consistent_hash' needs a hash_key"),
    ("key-without-hash", {"balancing": {"hash_key": {"header": "X-User"}}}, None,
     "upstreams.svc.balancing: hash_key is only for policy 'consistent_hash'"),
    ("two-keys", {"balancing": {"policy": "consistent_hash",
                                "hash_key": {"header": "X", "cookie": "s"}}}, None,
     "upstreams.svc.balancing.hash_key: give exactly one of header, cookie, client_ip"),
    ("4xx-failure", {"breaker": {"failure_statuses": [404]}}, None,
     "upstreams.svc.breaker.failure_statuses: invalid status 404"),
    ("unknown-breaker-key", {"breaker": {"threshold": 3}}, None,
     "upstreams.svc.breaker.threshold: unknown key"),
    ("cap-below-base", {"breaker": {"base_ejection": "1m", "max_ejection": "10s"}}, None,
     "upstreams.svc.breaker: max_ejection must be >= base_ejection"),
    ("health-path", {"health_check": {"path": "healthz"}}, None,
     "upstreams.svc.health_check.path: invalid path 'healthz'"),
    ("health-timeout", {"health_check": {"path": "/h", "interval": "1s", "timeout": "2s"}}, None,
     "upstreams.svc.health_check: timeout must be <= interval"),
    ("queue-without-limit", {"limits": {"max_queued": 5}}, None,
     "upstreams.svc.limits: max_queued needs max_concurrent"),
    ("retry-4xx", None, {"retries": {"on_statuses": [429]}},
     "routes[0].retries.on_statuses: invalid status 429"),
    ("retry-attempts", None, {"retries": {"attempts": 9}}, "routes[0].retries.attempts"),
    ("budget", None, {"retries": {"budget_percent": 150}}, "routes[0].retries.budget_percent"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("upstream", "route", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_name_their_path(
    upstream: dict[str, Any] | None, route: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigErrors) as err:
        validate_data(base(upstream, route), "t")
    assert any(str(e).startswith(message) for e in err.value.errors), err.value
