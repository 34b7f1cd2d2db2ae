"""Member: one endpoint as an upstream sees it, the unit the balancers pick.

A member ties the endpoint's connection pool (shared by every upstream naming the
same endpoint) to this upstream's view of it: its weight, its circuit breaker and
its health-check state. `available` is a plain attribute kept up to date by the
breaker and the health state (their `on_change`), so the balancers test one
attribute per candidate: out by either is out of rotation.

Breakers and health states outlive a Member: a reload builds new members around
the state objects it reuses (same upstream, endpoint and settings) and rebinds
their `on_change` to the new member.
"""

from __future__ import annotations

from gateway.upstream.breaker import Breaker, BreakerPolicy
from gateway.upstream.health import ALWAYS_UP, HealthState
from gateway.upstream.pool import ConnectionPool, EndpointSpec

_NO_BREAKER = BreakerPolicy(enabled=False)


class Member:
    __slots__ = ("available", "breaker", "health", "key", "pool", "spec", "weight")

    def __init__(
        self,
        pool: ConnectionPool,
        weight: int = 1,
        breaker: Breaker | None = None,
        health: HealthState | None = None,
    ) -> None:
        if weight < 1:
            raise ValueError("weight must be >= 1")
        self.pool = pool
        self.spec: EndpointSpec = pool.spec
        self.key = pool.key
        self.weight = weight
        self.breaker = breaker if breaker is not None else Breaker(_NO_BREAKER, pool.key)
        self.health = health if health is not None else ALWAYS_UP
        self.breaker.on_change = self.refresh
        if self.health is not ALWAYS_UP:
            self.health.on_change = self.refresh
        self.available = True
        self.refresh()

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight

    def refresh(self) -> None:
        self.available = self.breaker.admits and self.health.up

    def __repr__(self) -> str:
        state = "in" if self.available else "out"
        return (
            f"<Member {self.key} w={self.weight} {state} breaker={self.breaker.state.value} "
            f"health={'up' if self.health.up else 'down'} in_flight={self.in_flight}>"
        )
