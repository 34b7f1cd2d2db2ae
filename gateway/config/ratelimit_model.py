"""Rate limit config: per-route token-bucket policies, the Redis store, memory buckets.

A route's `rate_limits` is a list of policies, all of which must pass:

    rate_limits:
      - name: per-ip
        rate: 20/s                 # '<n>/<s|min|h>': n tokens refill per period
        burst: 40                  # bucket size; default n (the rate's count), min 1
        key: [client_ip]           # parts joined: client_ip, route, principal,
                                   # {header: X-API-Key}, {cookie: session}
        missing_key: reject        # or {fallback: anonymous}: one shared bucket
        cost: {default: 1, methods: {POST: 5}}
        mode: enforce              # or shadow: decide and count, never block
        store: redis               # or memory; default redis when `redis` is configured
        on_store_error: open       # open: in-memory buckets; closed: 503
        headers: true              # RateLimit / RateLimit-Policy on responses
        tiers: {gold: 1000/min}    # the caller's tier (auth) picks another rate

Top level, `redis` (url, cluster, timeout, key_prefix, batching, breaker) and
`rate_limit` (the in-memory store's size). A key part is normalised to a `KeyPart`
(`source` + `name`) and `missing_key` to a `MissingKey` (`fallback` None = reject) by
before-validators, so an error names the exact spot instead of every member of a union.
Cross-field rules (unique policy names per route, store: redis needs a redis section)
are in `checks.py`; a cost that exceeds the burst is refused here, since such a
request could never be admitted.

Principals and tiers (the route's `auth` section sets them): the key part `principal`
is the caller's API key name or JWT subject (absent: `missing_key` applies), and
`tiers` maps a tier name to the rate (and burst) that callers of that tier get from
this policy instead of `rate`; callers without a tier, or of a tier not listed, get
`rate`. One policy, one bucket per key, its size chosen by tier.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from gateway.config.fields import Method, Name, StrictModel, Token, choice, split_host_port, unit
from gateway.config.units import Duration

__all__ = [
    "PERIODS",
    "Cost",
    "KeyPart",
    "MissingKey",
    "RateLimitPolicy",
    "RateLimitSettings",
    "RedisBreaker",
    "RedisSettings",
    "TierLimit",
    "parse_rate",
]

PERIODS: dict[str, int] = {"s": 1, "min": 60, "h": 3600}
_RATE = re.compile(r"([1-9][0-9]{0,8})/(s|min|h)")
_RATE_HELP = "expected '<n>/<s|min|h>', like '20/s', '1000/min' or '5/h'"
# RFC 6265 4.1.1: a cookie name is a token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_KEY_HELP = "expected 'client_ip', 'route', 'principal', {header: <name>} or {cookie: <name>}"


def parse_rate(text: str) -> tuple[int, int]:
    """'20/s' -> (20, 1); ValueError with the expected shape otherwise."""
    m = _RATE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"invalid rate {text!r}: {_RATE_HELP}")
    return int(m.group(1)), PERIODS[m.group(2)]


def _check_rate(v: Any) -> Any:
    if not isinstance(v, str):
        raise ValueError(f"invalid rate {v!r}: {_RATE_HELP}")
    parse_rate(v)
    return v.strip()


class KeyPart(StrictModel):
    """One part of a bucket key: 'client_ip', 'route', 'principal', {header: X}, {cookie: X}."""

    source: Literal["client_ip", "route", "principal", "header", "cookie"]
    name: str | None = None

    def __str__(self) -> str:
        return self.source if self.name is None else f"{self.source}:{self.name}"


class _HeaderKey(StrictModel):
    header: Token = Field(description="Request header whose value is the key part.")


class _CookieKey(StrictModel):
    cookie: str = Field(description="Cookie whose value is the key part.")


def _key_part(v: Any) -> Any:
    if isinstance(v, KeyPart):
        return v
    if isinstance(v, str):
        if v in ("client_ip", "route", "principal"):
            return {"source": v}
        raise ValueError(f"invalid key part {v!r}: {_KEY_HELP}")
    if isinstance(v, dict) and len(v) == 1:
        ((kind, name),) = v.items()
        if kind in ("header", "cookie"):
            if not isinstance(name, str) or not name:
                raise ValueError(f"invalid {kind} name {name!r}: expected a non-empty string")
            if not _COOKIE_NAME.fullmatch(name):
                raise ValueError(
                    f"invalid {kind} name {name!r}: must be an HTTP token (RFC 9110 5.6.2)"
                )
            return {"source": kind, "name": name}
    raise ValueError(f"invalid key part {v!r}: {_KEY_HELP}")


def _not_empty(v: str) -> str:
    if not v:
        raise ValueError("must not be empty")
    return v


class MissingKey(StrictModel):
    """What to do when a request lacks a key part (header or cookie absent or empty)."""

    fallback: Annotated[str, AfterValidator(_not_empty)] | None = Field(
        default=None,
        description="Use this value for the missing part (one bucket shared by all such "
        "clients); none rejects the request with 400.",
    )


def _missing_key(v: Any) -> Any:
    if v == "reject":
        return {}
    if isinstance(v, dict | MissingKey):
        return v
    raise ValueError(f"invalid missing_key {v!r}: expected 'reject' or {{fallback: <value>}}")


Tokens = Annotated[int, Field(ge=0)]


class TierLimit(StrictModel):
    """A tier's rate in one policy; also written as a bare rate string."""

    rate: Annotated[str, BeforeValidator(_check_rate)] = Field(
        description="Refill rate '<n>/<s|min|h>' for callers of this tier."
    )
    burst: int | None = Field(
        default=None, ge=1, description="Bucket size in tokens; default the rate's n."
    )


def _tier_limit(v: Any) -> Any:
    return {"rate": v} if isinstance(v, str) else v


class Cost(StrictModel):
    """Tokens a request takes from the bucket: a default, and per method."""

    default: Tokens = Field(default=1, description="Tokens per request; 0 makes it free.")
    methods: dict[Method, Tokens] = Field(
        default={}, description="Tokens per request by method, e.g. {POST: 5}."
    )

    def for_method(self, method: str) -> int:
        return self.methods.get(method, self.default)


class RateLimitPolicy(StrictModel):
    """A token bucket per key: `rate` refills it, `burst` is its size."""

    name: Name = Field(description="Policy name, unique per route; used in RateLimit headers.")
    rate: Annotated[str, BeforeValidator(_check_rate)] = Field(
        description="Refill rate '<n>/<s|min|h>': n tokens per second, minute or hour.",
        examples=["20/s", "1000/min", "5/h"],
    )
    burst: int | None = Field(
        default=None, ge=1, description="Bucket size in tokens; default the rate's n."
    )
    key: list[
        Annotated[
            KeyPart,
            BeforeValidator(
                _key_part,
                json_schema_input_type=Literal["client_ip", "route", "principal"]
                | _HeaderKey
                | _CookieKey,
            ),
        ]
    ] = Field(
        default=[KeyPart(source="client_ip")],
        min_length=1,
        description="What identifies a client; several parts are combined into one key.",
    )
    missing_key: Annotated[
        MissingKey,
        BeforeValidator(_missing_key, json_schema_input_type=Literal["reject"] | MissingKey),
    ] = Field(
        default=MissingKey(),
        description="'reject' (400) or {fallback: <value>} when a header/cookie part is absent.",
    )
    cost: Cost = Field(default=Cost(), description="Tokens per request.")
    mode: Annotated[
        Literal["enforce", "shadow"], BeforeValidator(choice("mode", ("enforce", "shadow")))
    ] = Field(default="enforce", description="'shadow': decide and count, never block.")
    store: (
        Annotated[Literal["memory", "redis"], BeforeValidator(choice("store", ("memory", "redis")))]
        | None
    ) = Field(
        default=None,
        description="'memory' (per process) or 'redis' (shared); default redis when a "
        "redis section is configured, else memory.",
    )
    on_store_error: Annotated[
        Literal["open", "closed"], BeforeValidator(choice("on_store_error", ("open", "closed")))
    ] = Field(
        default="open",
        description="Redis unusable: 'open' decides with in-memory buckets (same policy, "
        "per process), 'closed' answers 503.",
    )
    headers: bool = Field(
        default=True, description="Send RateLimit-Policy and RateLimit response headers."
    )
    tiers: dict[Name, Annotated[TierLimit, BeforeValidator(_tier_limit)]] = Field(
        default={},
        description="Per caller tier (set by the route's auth: API key or JWT tier claim), "
        "the rate this policy applies instead of `rate`, as '<n>/<period>' or {rate, "
        "burst}; callers without a listed tier get `rate`.",
    )

    def tier_limits(self) -> dict[str, tuple[float, int]]:
        """Tier -> (tokens per second, burst)."""
        out = {}
        for tier, t in self.tiers.items():
            count, period = parse_rate(t.rate)
            out[tier] = (count / period, t.burst if t.burst is not None else count)
        return out

    @property
    def rate_count(self) -> int:
        return parse_rate(self.rate)[0]

    @property
    def period_s(self) -> int:
        return parse_rate(self.rate)[1]

    @property
    def rate_per_s(self) -> float:
        count, period = parse_rate(self.rate)
        return count / period

    @property
    def burst_tokens(self) -> int:
        return self.burst if self.burst is not None else self.rate_count

    @model_validator(mode="after")
    def _cost_fits_burst(self) -> RateLimitPolicy:
        burst = self.burst_tokens
        if self.cost.default > burst:
            raise ValueError(
                f"cost.default {self.cost.default} exceeds burst {burst}: "
                "such a request could never be admitted"
            )
        for method, cost in self.cost.methods.items():
            if cost > burst:
                raise ValueError(
                    f"cost.methods.{method} {cost} exceeds burst {burst}: "
                    "such a request could never be admitted"
                )
        costs = [self.cost.default, *self.cost.methods.values()]
        for tier, (_, tier_burst) in self.tier_limits().items():
            if max(costs) > tier_burst:
                raise ValueError(
                    f"tiers.{tier}: a cost of {max(costs)} exceeds its burst {tier_burst}: "
                    "such a request could never be admitted"
                )
        return self


class RedisBreaker(StrictModel):
    """The circuit breaker in front of Redis: an outage costs no per-request timeout."""

    failures: int = Field(
        default=3, ge=1, description="Consecutive failed calls that open the breaker."
    )
    open_for: Duration = Field(
        default=unit("250ms"), gt=0, description="First backoff before a probe call."
    )
    max_open_for: Duration = Field(
        default=unit("10s"), gt=0, description="The backoff doubles per failed probe up to this."
    )


_URL_HELP = (
    "expected 'redis://host:port/db', 'rediss://...', 'unix:///path' or "
    "'redis+sentinel://host:port[,host:port]/service[/db]'"
)


class RedisSettings(StrictModel):
    """The shared Redis store of rate-limit buckets."""

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis://, rediss:// (TLS), unix:// or "
        "redis+sentinel://h1:26379,h2:26379/<service>[/db].",
    )
    cluster: bool = Field(
        default=False, description="The url names a Redis Cluster node (redis:// or rediss://)."
    )
    timeout: Duration = Field(
        default=unit("50ms"), gt=0, description="Every Redis call, connecting included."
    )
    key_prefix: str = Field(
        default="gw:rl:",
        pattern=r"^[^{}\s]*$",
        description="Prefix of every bucket key (no braces: cluster hash tags are added).",
    )
    max_batch: int = Field(
        default=256, ge=1, description="Most bucket checks sent in one script call."
    )
    # One call out at a time: what queues meanwhile goes in the next call, so batches
    # grow with load and round trips do not (measured here: +4% req/s against 2).
    max_in_flight: int = Field(
        default=1, ge=1, description="Script calls in flight at once per process."
    )
    breaker: RedisBreaker = Field(default=RedisBreaker(), description="Circuit breaker.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        scheme = parts.scheme.lower()
        if scheme == "unix":
            if not parts.path:
                raise ValueError(f"invalid url {v!r}: a unix url needs a socket path")
            return v
        if scheme == "redis+sentinel":
            sentinel_parts(v)
            return v
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"invalid url {v!r}: {_URL_HELP}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"invalid url {v!r}: port must be a number in 0..65535") from None
        if not parts.hostname or port == 0:
            raise ValueError(f"invalid url {v!r}: host is missing")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"invalid url {v!r}: the path is a database number")
        return v

    @model_validator(mode="after")
    def _cluster_url(self) -> RedisSettings:
        if self.cluster and urlsplit(self.url).scheme.lower() not in ("redis", "rediss"):
            raise ValueError("cluster: true needs a redis:// or rediss:// url")
        if self.breaker.max_open_for < self.breaker.open_for:
            raise ValueError("breaker.max_open_for must be >= breaker.open_for")
        return self


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """'redis+sentinel://[:pw@]h1:p1,h2:p2/service[/db]' -> (addresses, service, db, pw)."""
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.partition(":")[2]) or None
    addresses = []
    for item in netloc.split(","):
        try:
            addresses.append(split_host_port(item))
        except ValueError:
            raise ValueError(f"invalid url {url!r}: bad sentinel address {item!r}") from None
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError(f"invalid url {url!r}: the sentinel service name is missing")
    if db and not db.isdigit():
        raise ValueError(f"invalid url {url!r}: the path after the service is a database number")
    return addresses, service, int(db or 0), password


class RateLimitSettings(StrictModel):
    """Process-wide rate limit settings."""

    memory_max_keys: int = Field(
        default=100_000,
        ge=1,
        description="Buckets kept by the in-memory store per process (least recently used "
        "are dropped, which refills them).",
    )
