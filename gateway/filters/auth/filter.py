"""AuthFilter: the route's "auth" slot, holding whichever checks the route configures.

FILTER_ORDER puts it after `size` (cheap limits first, and the webhook check reads a
body the size filter already bounds) and before `ratelimit` (which keys on the
principal set here). Inside the slot the order is fixed, cheapest first:

1. API key: a hash and a dict lookup;
2. JWT: a dict lookup for a token seen before, a signature check otherwise;
3. webhook signature: reads the body.

Every configured check must pass; the first that refuses answers. The principal is the
API key's name, then (when both are configured) the JWT subject overrides it; the tier
is the key's, or the JWT tier claim's when the token carries one.

A refusal is the gateway's JSON error: 401 `unauthorized` with a WWW-Authenticate
challenge (RFC 9110 11.6.1: `ApiKey`, `Bearer` with RFC 6750 error codes, or
`Signature`), 413 `payload_too_large` (a webhook body over its limit), 503
`auth_unavailable` (no usable JWKS). Each is counted in
`gateway_auth_failures_total{route, reason}` (children resolved on first use of a
reason: failures are rare) and logged on "gateway.auth" with route, reason and client
address, never the key, token or signature; at most `LOG_PER_S` lines per second per
route, the rest counted and reported with the next line, so a flood of bad tokens
does not flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config.model import Route as RouteConfig
from gateway.exchange import Exchange, Reply
from gateway.filters.auth.apikeys import ApiKeyCheck, load_key_file
from gateway.filters.auth.common import Check, Failure
from gateway.filters.auth.jwks import JwksSource, shared_source
from gateway.filters.auth.jws import VerifyKey, hs256_key
from gateway.filters.auth.jwt import JwtCheck
from gateway.filters.auth.webhook import WebhookCheck, load_secrets
from gateway.pipeline import Next

if TYPE_CHECKING:
    from prometheus_client import Counter

__all__ = ["LOG_PER_S", "AuthFilter", "build_auth_filter"]

log = logging.getLogger("gateway.auth")

LOG_PER_S = 10
_CODES = {401: "unauthorized", 413: "payload_too_large", 503: "auth_unavailable"}


class AuthFilter:
    """A route's auth checks, in the fixed order; counts and logs refusals."""

    __slots__ = ("_children", "_log_at", "_logged", "_suppressed", "checks", "failures", "route")

    def __init__(self, checks: list[Check], *, route: str) -> None:
        self.route = route
        self.checks = tuple(checks)
        self.failures: dict[str, int] = {}  # reason -> refusals (tests, repr)
        self._children: dict[str, Counter] = {}
        self._log_at = 0.0
        self._logged = 0
        self._suppressed = 0

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        for check in self.checks:
            failure = await check(ex)
            if failure is not None:
                return self.refuse(ex, failure)
        return await next(ex)

    def refuse(self, ex: Exchange, f: Failure) -> Reply:
        self.failures[f.reason] = self.failures.get(f.reason, 0) + 1
        child = self._children.get(f.reason)
        if child is None:
            from gateway.observability.metrics import metrics

            child = metrics().auth_failures.labels(route=self.route, reason=f.reason)
            self._children[f.reason] = child
        child.inc()
        self._log(ex, f)
        reply = Reply.error(
            f.status, _CODES.get(f.status, "unauthorized"), f.message, ex.request_id
        )
        if f.challenge is not None:
            reply.headers["WWW-Authenticate"] = f.challenge
        if f.status == 503:
            reply.headers["Retry-After"] = "5"
        return reply

    def _log(self, ex: Exchange, f: Failure) -> None:
        now = time.monotonic()
        if now - self._log_at >= 1.0:
            self._log_at, self._logged = now, 0
        if self._logged >= LOG_PER_S:
            self._suppressed += 1
            return
        self._logged += 1
        more = f" ({self._suppressed} more not logged)" if self._suppressed else ""
        self._suppressed = 0
        log.info(
            "auth refused: route=%s reason=%s status=%d client=%s id=%s%s",
            self.route,
            f.reason,
            f.status,
            ex.client_ip,
            ex.request_id,
            more,
        )

    def __repr__(self) -> str:
        return (
            f"<AuthFilter route={self.route} checks={list(self.checks)} failures={self.failures}>"
        )


def build_auth_filter(
    rcfg: RouteConfig,
    *,
    clock: Callable[[], float] = time.time,
    jwks: JwksSource | None = None,
) -> AuthFilter | None:
    """The route's auth filter (None without an `auth` section). Reads the key, secret
    and JWKS files; ValueError naming the route and file when one is unusable.
    `clock` is wall time (token and webhook timestamps); `jwks` overrides the JWKS
    source (tests inject one with a fake clock)."""
    auth = rcfg.auth
    if auth is None:
        return None
    checks: list[Check] = []
    at = f"route {rcfg.name!r} auth"
    try:
        if auth.api_keys is not None:
            keys = auth.api_keys
            file_keys = load_key_file(keys.file) if keys.file is not None else None
            checks.append(ApiKeyCheck(keys, file_keys))
        if auth.jwt is not None:
            j = auth.jwt
            source = jwks
            if source is None and j.jwks_file is not None:
                source = JwksSource.from_file(j.jwks_file)
            elif source is None and j.jwks_url is not None:
                source = shared_source(
                    j.jwks_url, j.jwks_refresh, j.jwks_min_refresh, j.jwks_max_stale, j.jwks_timeout
                )
            hs: VerifyKey | None = None
            if j.hs256_secret_file is not None:
                hs = hs256_key(_read_secret(j.hs256_secret_file))
            checks.append(JwtCheck(j, jwks=source, hs256=hs, clock=clock))
        if auth.webhook is not None:
            checks.append(
                WebhookCheck(auth.webhook, load_secrets(auth.webhook.secrets_file), clock)
            )
    except ValueError as e:
        raise ValueError(f"{at}: {e}") from None
    return AuthFilter(checks, route=rcfg.name)


def _read_secret(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read().rstrip(b"\r\n")
    except OSError as e:
        raise ValueError(f"cannot read the secret file {path!r}: {e.strerror}") from None
