"""OverloadFilter: shed a route's requests when the worker is under pressure.

It runs first (FILTER_ORDER: right after metrics), before any work is spent on the
request. Per request: `REQUESTS.active > limits[rank]`, the monitor's limit for the
route's priority (gateway/overload.py explains how lag and in-flight requests set
it), one index and one comparison while the worker is not overloaded.

A shed request gets 503 `{"error": "overloaded", ...}` with Retry-After (the
configured whole seconds), is counted by route, priority and reason (`lag` when
lag sheds its priority, else `in_flight`) and logged at most once per LOG_EVERY_S
per route with the count since the last line: a flood must not flood the log. In
shadow mode (`overload.mode: shadow`) it is counted as `lag_shadow` /
`in_flight_shadow` and goes on.
"""

from __future__ import annotations

import logging
import math
import time

from gateway.config.overload_model import Overload
from gateway.exchange import Exchange, Reply
from gateway.observability.metrics import REQUESTS
from gateway.overload import RANKS, SHED, SHED_ALL, OverloadMonitor
from gateway.pipeline import Next

__all__ = ["LOG_EVERY_S", "OverloadFilter"]

log = logging.getLogger("gateway.overload")

LOG_EVERY_S = 5.0


class OverloadFilter:
    """A route's priority bound to the worker's monitor."""

    __slots__ = (
        "_keys",
        "_log_at",
        "_unlogged",
        "limits",
        "priority",
        "rank",
        "retry_after",
        "route",
        "shadow",
    )

    def __init__(
        self, settings: Overload, monitor: OverloadMonitor, *, route: str, priority: str
    ) -> None:
        self.route = route
        self.priority = priority
        self.rank = RANKS[priority]
        self.limits = monitor.limits  # the monitor's list, updated in place
        self.shadow = settings.mode == "shadow"
        self.retry_after = str(max(1, math.ceil(settings.retry_after)))
        suffix = "_shadow" if self.shadow else ""
        self._keys = {reason: (route, priority, reason + suffix) for reason in ("lag", "in_flight")}
        for key in self._keys.values():
            SHED.setdefault(key, 0)
        self._log_at = 0.0
        self._unlogged = 0

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        if REQUESTS.active <= self.limits[self.rank]:
            return await next(ex)
        reason = "lag" if self.limits[self.rank] == SHED_ALL else "in_flight"
        key = self._keys[reason]
        SHED[key] = SHED.get(key, 0) + 1
        self._log(reason)
        if self.shadow:
            return await next(ex)
        reply = Reply.error(
            503, "overloaded", "the gateway is overloaded; retry later", ex.request_id
        )
        reply.headers["Retry-After"] = self.retry_after
        return reply

    def _log(self, reason: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now >= self._log_at:
            log.warning(
                "overload: %s %d request(s) of route %s (priority %s, by %s) since the last report",
                "would shed (shadow)" if self.shadow else "shed",
                self._unlogged,
                self.route,
                self.priority,
                reason,
            )
            self._unlogged = 0
            self._log_at = now + LOG_EVERY_S

    def __repr__(self) -> str:
        return (
            f"<OverloadFilter route={self.route} priority={self.priority}"
            f" limit={self.limits[self.rank]} shadow={self.shadow}>"
        )
