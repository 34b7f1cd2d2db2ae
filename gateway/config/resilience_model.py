"""The resilience parts of the config model: balancing, breakers, health checks, limits, retries.

Per upstream: `balancing`, `breaker`, `health_check`, `limits`; per route: `retries`.
Defaults are the safe choice: the breaker is on (5 consecutive failures or half of
at least 20 results over 10 s eject an endpoint for 30 s, growing to 5 min), health
checks are off until configured, no bulkhead (the pool's `max_connections` per
endpoint still holds), and idempotent requests get one retry on another endpoint
within a 20% retry budget. Statuses a breaker or a retry acts on are 5xx only: a
4xx is the client's fault and says nothing about the endpoint.

`gateway.upstream.service` turns these models into the runtime objects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.fields import StrictModel, Token, check_abs_path, choice, unit
from gateway.config.units import Duration

__all__ = ["Balancing", "BreakerSettings", "HashKey", "HealthCheck", "Retries", "UpstreamLimits"]

Policy = Annotated[
    Literal["round_robin", "weighted", "least_request", "consistent_hash"],
    BeforeValidator(
        choice("policy", ("round_robin", "weighted", "least_request", "consistent_hash"))
    ),
]


def _check_5xx(v: list[int]) -> list[int]:
    for s in v:
        if not 500 <= s <= 599:
            raise ValueError(f"invalid status {s}: only 5xx statuses (a 4xx is the client's fault)")
    return sorted(set(v))


def _check_statuses(v: list[int]) -> list[int]:
    for s in v:
        if not 100 <= s <= 599:
            raise ValueError(f"invalid status {s}: must be within 100..599")
    return sorted(set(v))


def _client_ip_shorthand(v: Any) -> Any:
    if v == "client_ip":
        return {"client_ip": True}
    if isinstance(v, str):
        raise ValueError(
            f"invalid hash_key {v!r}: expected 'client_ip', {{header: NAME}} or {{cookie: NAME}}"
        )
    return v


class HashKey(StrictModel):
    """What consistent hashing keys on: give exactly one of header, cookie, client_ip."""

    header: Token | None = Field(default=None, description="A request header's value.")
    cookie: Token | None = Field(default=None, description="A request cookie's value.")
    client_ip: Literal[True] | None = Field(
        default=None, description="The client address (also written as `hash_key: client_ip`)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> HashKey:
        if [self.header, self.cookie, self.client_ip].count(None) != 2:
            raise ValueError("give exactly one of header, cookie, client_ip")
        return self


class Balancing(StrictModel):
    """How a request picks one of the upstream's endpoints."""

    policy: Policy = Field(
        default="round_robin",
        description="'round_robin', 'weighted' (smooth weighted round robin on endpoint "
        "weights), 'least_request' (power of two choices on requests in flight) or "
        "'consistent_hash' (sticky on hash_key).",
    )
    hash_key: (
        Annotated[
            HashKey,
            BeforeValidator(_client_ip_shorthand, json_schema_input_type=str | HashKey),
        ]
        | None
    ) = Field(
        default=None,
        description="consistent_hash only: {header: NAME}, {cookie: NAME} or client_ip. "
        "A request without the key is balanced round robin.",
    )
    virtual_nodes: int = Field(
        default=160,
        ge=1,
        le=10_000,
        description="consistent_hash only: ring points per endpoint per unit of weight.",
    )

    @model_validator(mode="after")
    def _key_with_hash(self) -> Balancing:
        if self.policy == "consistent_hash" and self.hash_key is None:
            raise ValueError("policy 'consistent_hash' needs a hash_key")
        if self.policy != "consistent_hash" and self.hash_key is not None:
            raise ValueError("hash_key is only for policy 'consistent_hash'")
        return self


class BreakerSettings(StrictModel):
    """The circuit breaker per endpoint (closed -> open -> half-open -> closed)."""

    enabled: bool = Field(default=True, description="Eject failing endpoints at all.")
    consecutive_failures: int = Field(
        default=5, ge=0, description="Failures in a row that open the breaker; 0: off."
    )
    failure_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Failure share over `window` that opens the breaker; 0: off.",
    )
    min_requests: int = Field(
        default=20, ge=1, description="Results the window must hold before the ratio counts."
    )
    window: Duration = Field(default=unit("10s"), gt=0, description="The rolling window.")
    base_ejection: Duration = Field(
        default=unit("30s"),
        gt=0,
        description="Time open after the first ejection; times the number of consecutive "
        "ejections after that.",
    )
    max_ejection: Duration = Field(default=unit("5m"), gt=0, description="The longest time open.")
    half_open_probes: int = Field(
        default=1, ge=1, description="Requests let through at a time while half-open."
    )
    failure_statuses: Annotated[list[int], Field(min_length=0)] = Field(
        default=[502, 503, 504],
        description="Response statuses that count as failures (5xx only); connect errors "
        "and timeouts always do.",
    )
    max_ejection_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="At most this share of the endpoints ejected at once (at least one); "
        "endpoints refusing connections are ejected regardless.",
    )

    _statuses = field_validator("failure_statuses")(_check_5xx)

    @model_validator(mode="after")
    def _ejection_order(self) -> BreakerSettings:
        if self.max_ejection < self.base_ejection:
            raise ValueError("max_ejection must be >= base_ejection")
        return self


class HealthCheck(StrictModel):
    """Active health checks: GET `path` on every endpoint each `interval`, per worker."""

    path: str = Field(description="Path requested, starting with '/'.")
    expected_statuses: list[int] = Field(
        default=[200], min_length=1, description="Statuses that mean healthy."
    )
    interval: Duration = Field(default=unit("5s"), gt=0, description="Time between checks.")
    timeout: Duration = Field(default=unit("1s"), gt=0, description="A check's whole time.")
    healthy_threshold: int = Field(
        default=2, ge=1, description="Passing checks in a row that bring an endpoint back."
    )
    unhealthy_threshold: int = Field(
        default=3, ge=1, description="Failing checks in a row that take an endpoint out."
    )
    host: str | None = Field(
        default=None, description="Host header of the checks; default the endpoint's host[:port]."
    )

    _abs = field_validator("path")(check_abs_path)
    _statuses = field_validator("expected_statuses")(_check_statuses)

    @model_validator(mode="after")
    def _timeout_fits(self) -> HealthCheck:
        if self.timeout > self.interval:
            raise ValueError("timeout must be <= interval")
        return self


class UpstreamLimits(StrictModel):
    """The bulkhead per upstream: requests in flight and waiting; beyond them, 503 at once."""

    max_concurrent: int | None = Field(
        default=None, ge=1, description="Requests in flight at most; none: unlimited."
    )
    max_queued: int = Field(
        default=0, ge=0, description="Requests waiting for a slot at most; beyond: 503."
    )
    queue_timeout: Duration = Field(
        default=unit("1s"), gt=0, description="Longest wait for a slot; then 503."
    )

    @model_validator(mode="after")
    def _queue_needs_limit(self) -> UpstreamLimits:
        if self.max_concurrent is None and self.max_queued:
            raise ValueError("max_queued needs max_concurrent")
        return self


class Retries(StrictModel):
    """Retries on another endpoint for idempotent requests whose body can be replayed."""

    attempts: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Extra tries on a retriable status or timeout (idempotent methods only); "
        "a connect failure moves to the next endpoint for any method regardless.",
    )
    per_try_timeout: Duration = Field(
        default=0.0,
        description="Longest wait for each try's response head; 0: only the route's timeouts.",
    )
    on_statuses: list[int] = Field(
        default=[502, 503, 504], description="Response statuses retried (5xx only)."
    )
    budget_percent: float = Field(
        default=20.0,
        ge=0,
        le=100,
        description="Retries at most this share of the route's requests over 10 s.",
    )
    min_retries_per_s: float = Field(
        default=3.0, ge=0, description="Retries always allowed per second, however few requests."
    )

    _statuses = field_validator("on_statuses")(_check_5xx)
