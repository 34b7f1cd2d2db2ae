"""BanFilter: refuse banned, deny-listed and user-agent-denied clients; count blocks.

It runs early (FILTER_ORDER: right after metrics, before header edits, size limits,
the rate limiter and screening), so a banned client costs one dict lookup and a 403.
Per request, on `ex.client_ip` (the resolved client, trusted proxies applied):

1. its class, from a per-config dict cache (address text -> (class, canonical
   address); the CIDR walk happens once per address, the cache is cleared past
   `_CACHE_MAX` entries): `allow` passes at once (never denied, never banned, its
   blocks not counted), `deny` is refused;
2. `user_agent_deny` (compiled regexes, searched in User-Agent) is refused;
3. an active ban (`BanStore.check`, one dict lookup in this worker's BanState, which
   the Redis sync keeps current: no Redis call here) is refused with Retry-After
   (whole seconds until the ban ends, rounded up);
4. else `next(ex)`; when a later filter blocked the request for abuse it says so in
   `ex.state["blocked_by"]` (the screening filter does) and the block is counted
   (BanStore.record_block), which may start a ban.

A refusal is 403 `{"error": "banned", "reason": "ban" | "deny_list" | "user_agent",
"message", "request_id"}`; the User-Agent is never echoed. In shadow mode
(`bans.mode: shadow`) the refusal is counted and logged at debug, and the request
goes on. Refusals are counted (`BanState.refused`), not logged one by one: a banned
client's flood must not flood the log too; the ban itself is logged once when it
starts.

`BanGuard` is the per-config half (compiled lists, the store), shared by every
route's filter; a route with `bans: false` gets no filter.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re

from gateway.config.bans_model import Bans
from gateway.exchange import Exchange, Reply
from gateway.pipeline import Next
from gateway.store.bans import BanStore

__all__ = ["ALLOW", "DENY", "NEUTRAL", "BanFilter", "BanGuard"]

log = logging.getLogger("gateway.bans")

NEUTRAL, ALLOW, DENY = 0, 1, 2
_CACHE_MAX = 65_536

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class BanGuard:
    """One config's allow/deny networks, user-agent patterns and ban store."""

    __slots__ = ("_cache", "allow", "deny", "store", "ua")

    def __init__(self, rules: Bans, store: BanStore) -> None:
        self.store = store
        self.allow: tuple[Net, ...] = tuple(ipaddress.ip_network(c) for c in rules.allow)
        self.deny: tuple[Net, ...] = tuple(ipaddress.ip_network(c) for c in rules.deny)
        # Each pattern on its own: one may carry global flags, like '(?i)sqlmap'.
        self.ua = tuple(re.compile(p) for p in rules.user_agent_deny) or None
        self._cache: dict[str, tuple[int, str]] = {}

    def classify(self, ip: str) -> tuple[int, str]:
        """(NEUTRAL | ALLOW | DENY, canonical address) of `ip`; cached."""
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:  # not an address (a unix socket peer): nothing to match
            result = (NEUTRAL, ip)
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            kind = NEUTRAL
            if any(addr in net for net in self.allow):
                kind = ALLOW
            elif any(addr in net for net in self.deny):
                kind = DENY
            result = (kind, str(addr))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[ip] = result
        return result

    def allowed(self, ip: str) -> bool:
        return self.classify(ip)[0] == ALLOW

    def __repr__(self) -> str:
        return (
            f"<BanGuard allow={len(self.allow)} deny={len(self.deny)} "
            f"ua={[p.pattern for p in self.ua or ()]} {self.store!r}>"
        )


class BanFilter:
    """A route's view of the guard: refuse early, count blocks after."""

    __slots__ = ("guard", "route")

    def __init__(self, guard: BanGuard, *, route: str) -> None:
        self.guard = guard
        self.route = route

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        g = self.guard
        kind, ip = g.classify(ex.client_ip)
        if kind == ALLOW:
            return await next(ex)
        reply: Reply | None = None
        if kind == DENY:
            reply = self._refuse(ex, "deny_list", "client address denied")
        elif g.ua is not None and _any_search(g.ua, ex.headers.get("User-Agent", "")):
            reply = self._refuse(ex, "user_agent", "user agent denied")
        else:
            ban = g.store.check(ip)
            if ban is not None:
                left = max(1, math.ceil(ban.until - g.store.state.clock()))
                reply = self._refuse(ex, "ban", f"client banned; retry in {left} s")
                if reply is not None:
                    reply.headers["Retry-After"] = str(left)
        if reply is not None:
            return reply
        result = await next(ex)
        by = ex.state.get("blocked_by")
        if by is not None:
            g.store.record_block(ip, f"{by} on route {self.route}")
        return result

    def _refuse(self, ex: Exchange, reason: str, message: str) -> Reply | None:
        state = self.guard.store.state
        if self.guard.store.shadow:
            state.shadow_refused += 1
            log.debug(
                "would refuse (shadow) client %s on route %s (id=%s): %s",
                ex.client_ip,
                self.route,
                ex.request_id,
                reason,
            )
            return None
        state.refused += 1
        return Reply.json(
            403,
            {"error": "banned", "reason": reason, "message": message, "request_id": ex.request_id},
        )

    def __repr__(self) -> str:
        return f"<BanFilter route={self.route} {self.guard!r}>"


def _any_search(patterns: tuple[re.Pattern[str], ...], text: str) -> bool:
    return bool(text) and any(p.search(text) for p in patterns)
