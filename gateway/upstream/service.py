"""Upstream: a named group of members with its balancer, breakers, bulkhead and checks.

`build_upstream` turns an upstream's config into one, reusing the state of the
previous Runtime's upstream of the same name where the settings did not change:
a breaker is kept per endpoint while the breaker settings are equal, health states
and the checker while the health-check settings and endpoints are equal (so a
reload neither forgets an ejection nor readmits an endpoint that is down). The
bulkhead is new on each build (its counters belong to the requests of one config).
The adaptive concurrency limiter (adaptive.py) is kept while its settings are equal:
its min RTT and limit are what it learned, and in-flight requests release into it.
`guarded` says whether a request must pass a bulkhead or a limiter at all (one
attribute test on the forwarder's hot path).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gateway.config.model import Upstream as UpstreamConfig
from gateway.upstream.adaptive import AdaptiveLimiter
from gateway.upstream.balancer import (
    Balancer,
    ConsistentHash,
    LeastRequest,
    RoundRobin,
    SmoothWeighted,
)
from gateway.upstream.breaker import Breaker, BreakerPolicy, EjectionGroup
from gateway.upstream.bulkhead import Bulkhead
from gateway.upstream.health import HealthChecker, HealthPolicy, HealthState
from gateway.upstream.member import Member
from gateway.upstream.pool import ConnectionPool

if TYPE_CHECKING:
    from gateway.upstream.locality import RegionalBalancer


class Upstream:
    __slots__ = (
        "adaptive",
        "balancer",
        "bulkhead",
        "checker",
        "group",
        "guarded",
        "hash_key",
        "members",
        "name",
    )

    def __init__(
        self,
        name: str,
        members: Sequence[Member | ConnectionPool],
        *,
        policy: str = "round_robin",
        virtual_nodes: int = 160,
        max_ejection_percent: int = 50,
        bulkhead: Bulkhead | None = None,
        checker: HealthChecker | None = None,
        hash_key: tuple[str, str] | None = None,
        adaptive: AdaptiveLimiter | None = None,
    ) -> None:
        ms = [m if isinstance(m, Member) else Member(m) for m in members]
        self.name = name
        self.balancer: Balancer | RegionalBalancer  # regional: set by the runtime (locality.py)
        if policy == "weighted":
            self.balancer = SmoothWeighted(ms)
        elif policy == "least_request":
            self.balancer = LeastRequest(ms)
        elif policy == "consistent_hash":
            self.balancer = ConsistentHash(ms, virtual_nodes)
        else:
            self.balancer = RoundRobin(ms)
        self.members = self.balancer.members
        self.group = EjectionGroup([m.breaker for m in self.members], max_ejection_percent)
        self.bulkhead = bulkhead
        self.adaptive = adaptive
        self.guarded = bulkhead is not None or adaptive is not None
        self.checker = checker
        self.hash_key = hash_key  # ("header" | "cookie" | "client_ip", name)

    @property
    def pools(self) -> list[ConnectionPool]:
        return [m.pool for m in self.members]

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until an endpoint may be back (Retry-After), at least 1."""
        waits = []
        by_breaker = self.group.retry_after_s(now)
        if by_breaker is not None:
            waits.append(by_breaker)
        if self.checker is not None and any(not m.health.up for m in self.members):
            waits.append(self.checker.policy.interval_s)
        return max(1, math.ceil(min(waits, default=1.0)))

    def __repr__(self) -> str:
        return (
            f"<Upstream {self.name} {type(self.balancer).__name__} "
            f"endpoints={[m.key for m in self.members]} {self.group!r}>"
        )


def breaker_policy(cfg: UpstreamConfig) -> BreakerPolicy:
    b = cfg.breaker
    return BreakerPolicy(
        enabled=b.enabled,
        consecutive_failures=b.consecutive_failures,
        failure_ratio=b.failure_ratio,
        min_requests=b.min_requests,
        window_s=b.window,
        base_ejection_s=b.base_ejection,
        max_ejection_s=b.max_ejection,
        half_open_probes=b.half_open_probes,
        failure_statuses=frozenset(b.failure_statuses),
        max_ejection_percent=b.max_ejection_percent,
    )


def health_policy(cfg: UpstreamConfig) -> HealthPolicy | None:
    h = cfg.health_check
    if h is None:
        return None
    return HealthPolicy(
        path=h.path,
        expected_statuses=frozenset(h.expected_statuses),
        interval_s=h.interval,
        timeout_s=h.timeout,
        healthy_threshold=h.healthy_threshold,
        unhealthy_threshold=h.unhealthy_threshold,
        host=h.host,
    )


def build_upstream(
    name: str,
    cfg: UpstreamConfig,
    pools: list[ConnectionPool],
    previous: Upstream | None,
    now: float,
    clock: Callable[[], float] = time.monotonic,
) -> Upstream:
    """The Upstream for `cfg` over `pools` (one per endpoint, in order)."""
    bpolicy = breaker_policy(cfg)
    hpolicy = health_policy(cfg)
    old = {m.key: m for m in previous.members} if previous is not None else {}
    old_checker = previous.checker if previous is not None else None
    same_health = old_checker is not None and old_checker.policy == hpolicy
    members: list[Member] = []
    targets: list[tuple[ConnectionPool, HealthState]] = []
    for pool, ep in zip(pools, cfg.endpoints, strict=True):
        prev = old.get(pool.key)
        if prev is not None and prev.breaker.policy == bpolicy:
            breaker = prev.breaker
        else:
            breaker = Breaker(bpolicy, f"{name}/{pool.key}", now)
        health = None
        if hpolicy is not None:
            health = prev.health if prev is not None and same_health else None
            if health is None:
                health = HealthState(hpolicy, f"{name}/{pool.key}")
            targets.append((pool, health))
        members.append(Member(pool, ep.weight, breaker, health))
    checker = None
    if hpolicy is not None:
        if same_health and old_checker is not None and old_checker.targets == tuple(targets):
            checker = old_checker  # keeps running across the reload
        else:
            checker = HealthChecker(name, hpolicy, targets)
    limits = cfg.limits
    bulkhead = None
    if limits.max_concurrent is not None:
        bulkhead = Bulkhead(limits.max_concurrent, limits.max_queued, limits.queue_timeout)
    adaptive = None
    ac = cfg.adaptive_concurrency
    if ac is not None:
        old_ac = previous.adaptive if previous is not None else None
        keep = old_ac is not None and old_ac.settings == ac and old_ac.clock is clock
        adaptive = old_ac if keep else AdaptiveLimiter(name, ac, clock)
    key = cfg.balancing.hash_key
    hash_key = None
    if key is not None:
        if key.header is not None:
            hash_key = ("header", key.header)
        elif key.cookie is not None:
            hash_key = ("cookie", key.cookie)
        else:
            hash_key = ("client_ip", "")
    return Upstream(
        name,
        members,
        policy=cfg.balancing.policy,
        virtual_nodes=cfg.balancing.virtual_nodes,
        max_ejection_percent=cfg.breaker.max_ejection_percent,
        bulkhead=bulkhead,
        checker=checker,
        hash_key=hash_key,
        adaptive=adaptive,
    )
