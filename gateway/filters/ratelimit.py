"""The rate limit filter: a route's token-bucket policies, all of which must pass.

Built once per route at load (`build_ratelimit_filter`): each policy becomes a
`_Policy` with its key recipe, costs by method, `Limit`, store choice and the
pre-encoded RateLimit-Policy item. Per request the filter builds each policy's key,
checks the memory policies synchronously and every Redis policy of the route in one
batched store call (`RateLimitStores.take_shared`, which joins the event loop tick's
batch), then answers:

- a policy with `missing_key: reject` and no key -> 400 `rate_limit_key_missing`,
  before any tokens are spent;
- Redis unusable and a policy with `on_store_error: closed` -> 503
  `rate_limit_unavailable` (`open` policies were decided by the memory store);
- any enforcing policy limited -> 429 `{"error": "rate_limited", "message",
  "request_id"}` with `Retry-After` (whole seconds, rounded up, the longest wait
  among the limiting policies) and the RateLimit fields;
- else `next(ex)`, and the RateLimit fields are added to its reply.

Tokens: a request limited by one policy still spends the tokens of the policies that
admitted it (as Envoy's descriptors do); the error is on the protective side.

Keys are `<route>:<policy>:<part>|<part>`: `client_ip` is the resolved client
(trusted proxies applied), `route` the route name, `principal` the caller the route's
auth filter identified (API key name or JWT subject; absent: a missing part), header
and cookie values are
hashed (BLAKE2b, 96 bits) so API keys and session ids never sit in Redis in clear. A
missing or empty header/cookie takes the policy's fallback value (`=<fallback>`).

Tiers: a policy with `tiers` takes its Limit (and RateLimit-Policy item) from
`ex.principal_tier` when that tier is listed, else its own; both are compiled at load,
so the choice is one dict lookup, and only for policies that have tiers.

Header fields per draft-ietf-httpapi-ratelimit-headers-11 (May 2026; the field syntax
is unchanged since -08), as RFC 8941 lists of strings with parameters:

    RateLimit-Policy: "per-ip";q=40;w=2
    RateLimit: "per-ip";r=39;t=1

`q` is the burst (the bucket's size) and `w` the seconds to fill an empty bucket
(rounded up, at least 1): with the default burst these are exactly the configured
'<n>/<period>'. `r` is the whole tokens left, `t` the seconds until the bucket is
full again, rounded up; on a 429, a limiting policy's `t` is its Retry-After, since
the draft (section 6) wants Retry-After no earlier than `t`. Several policies are
one list, joined with ", " (RFC 8941 4.1.1). Shadow policies send no fields: they
are not what the client is held to. Policy names are config Names
([A-Za-z0-9_.-]), so they need no escaping inside the quotes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

from gateway.config.model import Route as RouteConfig
from gateway.config.ratelimit_model import KeyPart, RateLimitPolicy
from gateway.exchange import Exchange, Reply
from gateway.pipeline import Next
from gateway.store.bucket import Decision, Limit
from gateway.store.redis_store import Check
from gateway.store.stores import PolicyCounters, RateLimitStores

__all__ = ["DRAFT", "RateLimitFilter", "build_ratelimit_filter"]

DRAFT = "draft-ietf-httpapi-ratelimit-headers-11"

Getter = Callable[[Exchange], str | None]


def _hash(value: str) -> str:
    return hashlib.blake2b(value.encode(), digest_size=12).hexdigest()


def _cookie(headers_value: list[str], name: str) -> str | None:
    # RFC 6265 5.4: "name=value" pairs separated by "; "; the first match wins.
    for header in headers_value:
        for pair in header.split(";"):
            k, sep, v = pair.strip().partition("=")
            if sep and k == name:
                return v
    return None


def _getter(part: KeyPart, route: str) -> Getter:
    if part.source == "client_ip":
        return lambda ex: ex.client_ip
    if part.source == "route":
        return lambda ex: route
    if part.source == "principal":
        return lambda ex: ex.principal
    name = part.name
    assert name is not None
    if part.source == "header":

        def header(ex: Exchange) -> str | None:
            v = ex.headers.get(name)
            return _hash(v) if v else None

        return header

    def cookie(ex: Exchange) -> str | None:
        v = _cookie(ex.headers.getall("Cookie", []), name)
        return _hash(v) if v else None

    return cookie


def _describe(part: KeyPart) -> str:
    return f"the {part.name} header" if part.source == "header" else f"the {part.name} cookie"


class _Policy:
    """One policy of one route, compiled."""

    __slots__ = (
        "costs",
        "counters",
        "default_cost",
        "fail_open",
        "fallback",
        "getters",
        "headers",
        "item",
        "limit",
        "name",
        "parts",
        "prefix",
        "shadow",
        "shared",
        "tiers",
    )

    def __init__(self, cfg: RateLimitPolicy, route: str, shared: bool, counters: PolicyCounters):
        self.name = cfg.name
        self.parts = tuple(cfg.key)
        self.getters = tuple(_getter(p, route) for p in cfg.key)
        self.fallback = None if cfg.missing_key.fallback is None else f"={cfg.missing_key.fallback}"
        self.default_cost = cfg.cost.default
        self.costs = dict(cfg.cost.methods)
        self.limit = Limit(cfg.rate_per_s, cfg.burst_tokens)
        self.shadow = cfg.mode == "shadow"
        self.shared = shared
        self.fail_open = cfg.on_store_error == "open"
        self.headers = cfg.headers and not self.shadow
        self.counters = counters
        self.prefix = f"{route}:{cfg.name}:"
        window = max(1, math.ceil(self.limit.fill_s - 1e-9))
        self.item = f'"{cfg.name}";q={cfg.burst_tokens};w={window}'
        # tier -> (Limit, RateLimit-Policy item); None without tiers (the common case).
        tiers: dict[str, tuple[Limit, str]] = {}
        for tier, (rate, burst) in cfg.tier_limits().items():
            lim = Limit(rate, burst)
            w = max(1, math.ceil(lim.fill_s - 1e-9))
            tiers[tier] = (lim, f'"{cfg.name}";q={burst};w={w}')
        self.tiers = tiers or None

    def limit_for(self, ex: Exchange) -> tuple[Limit, str]:
        """This policy's Limit and RateLimit-Policy item for the caller's tier."""
        if self.tiers is not None and ex.principal_tier is not None:
            hit = self.tiers.get(ex.principal_tier)
            if hit is not None:
                return hit
        return self.limit, self.item

    def key(self, ex: Exchange) -> str | None:
        """The bucket key for `ex`, or None when a part is missing and there's no fallback."""
        values = []
        for get in self.getters:
            v = get(ex)
            if v is None:
                if self.fallback is None:
                    return None
                v = self.fallback
            values.append(v)
        return self.prefix + "|".join(values)

    def missing(self, ex: Exchange) -> str:
        for part, get in zip(self.parts, self.getters, strict=True):
            if get(ex) is None:
                return _describe(part)
        return "a rate limit key"  # pragma: no cover - only called when one is missing

    def __repr__(self) -> str:
        store = "redis" if self.shared else "memory"
        return (
            f"<policy {self.name} {self.limit.rate:g}/s burst={self.limit.burst}"
            f" key={'+'.join(str(p) for p in self.parts)} {store}"
            f"{' shadow' if self.shadow else ''}>"
        )


class RateLimitFilter:
    """A route's rate limit policies; immutable once built (counters aside)."""

    __slots__ = (
        "any_shared",
        "policies",
        "policy_header",
        "route",
        "single",
        "single_fail_open",
        "stores",
    )

    def __init__(self, route: str, policies: tuple[_Policy, ...], stores: RateLimitStores):
        self.route = route
        self.policies = policies
        self.stores = stores
        self.any_shared = any(p.shared for p in policies)
        items = [p.item for p in policies if p.headers]
        self.policy_header = ", ".join(items) if items else None
        # The common case, one enforcing policy, takes a path without the lists.
        one = policies[0] if len(policies) == 1 and not policies[0].shadow else None
        self.single = one
        self.single_fail_open = (one.fail_open,) if one is not None else ()

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        p = self.single
        if p is not None:
            key = p.key(ex)
            if key is not None:
                cost = p.costs.get(ex.method, p.default_cost)
                limit, item = (p.limit, p.item) if p.tiers is None else p.limit_for(ex)
                if p.shared:
                    check = (Check(key, limit, cost),)
                    d = (await self.stores.take_shared(check, self.single_fail_open))[0]
                else:
                    d = self.stores.memory.take(key, limit, cost)
                if d is None or not d.allowed:
                    refusal = self._verdict(ex, [key], [d])
                    assert refusal is not None
                    return refusal
                p.counters.allowed += 1
                ex.state["ratelimit"] = "allowed"  # the access log's rate_limit field
                reply = await next(ex)
                if p.headers:
                    headers = reply.headers
                    headers["RateLimit-Policy"] = item
                    headers["RateLimit"] = f'"{p.name}";r={d.remaining};t={math.ceil(d.reset_s)}'
                return reply
        policies = self.policies
        keys: list[str | None] = []
        for p in policies:
            key = p.key(ex)
            if key is None and not p.shadow:
                p.counters.limited += 1
                ex.state["ratelimit"] = "limited"
                return Reply.error(
                    400,
                    "rate_limit_key_missing",
                    f"this route needs {p.missing(ex)} (rate limit {p.name!r})",
                    ex.request_id,
                )
            keys.append(key)
        decisions = await self._decide(ex, keys)
        refusal = self._verdict(ex, keys, decisions)
        if refusal is not None:
            return refusal
        reply = await next(ex)
        self._add_headers(ex, reply, decisions)
        return reply

    def _verdict(
        self, ex: Exchange, keys: list[str | None], decisions: list[Decision | None]
    ) -> Reply | None:
        """Count the decisions; the refusal to send (503 or 429), or None to go on."""
        retry_after = 0
        limited: list[str] = []
        unavailable = False
        shadowed = False
        for p, key, d in zip(self.policies, keys, decisions, strict=True):
            c = p.counters
            if key is None:  # shadow policy, key missing: would have been a 400
                c.shadow_limited += 1
                shadowed = True
            elif d is None:
                if not p.shadow:
                    c.unavailable += 1
                    unavailable = True
            elif d.allowed:
                c.allowed += 1
            elif p.shadow:
                c.shadow_limited += 1
                shadowed = True
            else:
                c.limited += 1
                limited.append(p.name)
                retry_after = max(retry_after, _seconds(d.retry_after_s, p.limit))
        ex.state["ratelimit"] = (
            "store_error"
            if unavailable
            else "limited"
            if limited
            else "shadow"
            if shadowed
            else "allowed"
        )
        if unavailable:
            reply = Reply.error(
                503, "rate_limit_unavailable", "the rate limit store is unavailable", ex.request_id
            )
            reply.headers["Retry-After"] = "1"
            return reply
        if limited:
            names = ", ".join(repr(n) for n in limited)
            reply = Reply.error(
                429,
                "rate_limited",
                f"rate limit {names} exceeded; retry in {retry_after} s",
                ex.request_id,
            )
            reply.headers["Retry-After"] = str(retry_after)
            self._add_headers(ex, reply, decisions)
            return reply
        return None

    async def _decide(self, ex: Exchange, keys: list[str | None]) -> list[Decision | None]:
        method = ex.method
        out: list[Decision | None] = [None] * len(keys)
        shared: list[Check] = []
        shared_at: list[int] = []
        fail_open: list[bool] = []
        memory = self.stores.memory
        for i, (p, key) in enumerate(zip(self.policies, keys, strict=True)):
            if key is None:
                continue
            cost = p.costs.get(method, p.default_cost)
            limit = p.limit if p.tiers is None else p.limit_for(ex)[0]
            if p.shared:
                shared.append(Check(key, limit, cost))
                shared_at.append(i)
                fail_open.append(p.fail_open)
            else:
                out[i] = memory.take(key, limit, cost)
        if shared:
            for i, d in zip(
                shared_at, await self.stores.take_shared(shared, fail_open), strict=True
            ):
                out[i] = d
        return out

    def _add_headers(self, ex: Exchange, reply: Reply, decisions: list[Decision | None]) -> None:
        if self.policy_header is None:
            return
        policy_header = self.policy_header
        if any(p.tiers is not None for p in self.policies):
            policy_header = ", ".join(p.limit_for(ex)[1] for p in self.policies if p.headers)
        items = []
        for p, d in zip(self.policies, decisions, strict=True):
            if p.headers and d is not None:
                t = _seconds(d.retry_after_s, p.limit) if not d.allowed else math.ceil(d.reset_s)
                items.append(f'"{p.name}";r={d.remaining};t={t}')
        reply.headers["RateLimit-Policy"] = policy_header
        if items:
            reply.headers["RateLimit"] = ", ".join(items)

    def __repr__(self) -> str:
        return f"<RateLimitFilter route={self.route} policies={list(self.policies)}>"


def _seconds(wait_s: float, limit: Limit) -> int:
    """Whole seconds to wait, rounded up (RFC 9110 10.2.3 delay-seconds), at least 1."""
    if math.isinf(wait_s):  # cost > burst: refused by the config, bounded here anyway
        wait_s = limit.fill_s
    return max(1, math.ceil(wait_s - 1e-9))


def build_ratelimit_filter(
    route_cfg: RouteConfig, stores: RateLimitStores
) -> RateLimitFilter | None:
    """The route's rate limit filter, or None when it configures no policy."""
    if not route_cfg.rate_limits:
        return None
    policies = []
    for cfg in route_cfg.rate_limits:
        store = cfg.store or ("redis" if stores.redis is not None else "memory")
        if store == "redis" and stores.redis is None:
            raise ValueError(
                f"route {route_cfg.name!r} policy {cfg.name!r}: store 'redis' without a "
                "redis section"
            )
        counters = stores.counters(route_cfg.name, cfg.name)
        policies.append(_Policy(cfg, route_cfg.name, store == "redis", counters))
    return RateLimitFilter(route_cfg.name, tuple(policies), stores)
