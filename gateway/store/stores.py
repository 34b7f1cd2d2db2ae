"""RateLimitStores: the bucket stores of one worker process, reused across reloads.

One object per worker owns the in-memory store, the Redis client (when the config has
a `redis` section) with its breaker, and the counters, so that buckets, connections
and counts survive a reload whose settings did not change:

    stores = RateLimitStores.for_config(config, previous=old_stores)   # at load/reload
    filters["ratelimit"] = build_ratelimit_filter(route_cfg, stores)   # per route
    if stores is not old_stores: await old_stores.close()              # after the swap

`for_config` returns `previous` itself when `config.redis` and `config.rate_limit`
are unchanged; otherwise a new object that takes over the memory buckets and the
counters, while the caller closes the old one (its Redis client) once the old runtime
has drained. In-flight checks on a closed store fail as StoreUnavailable and follow
their policy's `on_store_error`.

`take_shared` is the fallback logic in one place: Redis answers, or, when it cannot
(error, timeout, breaker open), each check whose policy says `open` is decided by the
memory store (same key, same limit; per process) and each `closed` one gets None,
which the filter answers with 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.config.model import Config
from gateway.config.ratelimit_model import RateLimitSettings, RedisSettings
from gateway.store.breaker import Breaker
from gateway.store.bucket import Decision
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import Check, RedisStore, StoreUnavailable

__all__ = ["PolicyCounters", "RateLimitStores"]


class PolicyCounters:
    """Decisions of one (route, policy); plain ints, exported by the metrics module."""

    __slots__ = ("allowed", "limited", "shadow_limited", "unavailable")

    def __init__(self) -> None:
        self.allowed = 0
        self.limited = 0  # answered 429 (or 400 for a missing key)
        self.shadow_limited = 0  # would have been limited; shadow mode let it through
        self.unavailable = 0  # fail-closed 503s

    def __repr__(self) -> str:
        return (
            f"<PolicyCounters allowed={self.allowed} limited={self.limited}"
            f" shadow_limited={self.shadow_limited} unavailable={self.unavailable}>"
        )


class RateLimitStores:
    def __init__(
        self,
        redis: RedisSettings | None = None,
        settings: RateLimitSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        memory: MemoryStore | None = None,
        counters: dict[tuple[str, str], PolicyCounters] | None = None,
    ) -> None:
        self.redis_settings = redis
        self.settings = settings if settings is not None else RateLimitSettings()
        self.clock = clock
        self.memory = memory if memory is not None else MemoryStore(clock=clock)
        self.memory.max_keys = self.settings.memory_max_keys
        self.redis: RedisStore | None = None
        if redis is not None:
            b = redis.breaker
            breaker = Breaker(b.failures, b.open_for, b.max_open_for, clock=clock)
            self.redis = RedisStore.from_settings(redis, breaker)
        self._counters = counters if counters is not None else {}
        self.fallbacks = 0  # checks decided by the memory store because Redis could not
        self.store_errors = 0  # checks Redis could not answer (error, timeout, breaker)

    @classmethod
    def for_config(cls, config: Config, previous: RateLimitStores | None = None) -> RateLimitStores:
        """`previous` when its settings still hold, else a new one inheriting its state."""
        if previous is not None and previous.matches(config):
            return previous
        return cls(
            config.redis,
            config.rate_limit,
            clock=previous.clock if previous is not None else time.monotonic,
            memory=previous.memory if previous is not None else None,
            counters=previous._counters if previous is not None else None,
        )

    def matches(self, config: Config) -> bool:
        return self.redis_settings == config.redis and self.settings == config.rate_limit

    def counters(self, route: str, policy: str) -> PolicyCounters:
        """The counters of one policy; the same object across reloads."""
        key = (route, policy)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = PolicyCounters()
        return c

    async def take_shared(
        self, checks: Sequence[Check], fail_open: Sequence[bool]
    ) -> list[Decision | None]:
        """Decide `checks` in Redis, falling back per check; None = unavailable (503)."""
        if self.redis is None:
            raise RuntimeError("no redis store configured")
        try:
            return list(await self.redis.take(checks))
        except StoreUnavailable:
            pass
        self.store_errors += len(checks)
        out: list[Decision | None] = []
        for check, is_open in zip(checks, fail_open, strict=True):
            if is_open:
                self.fallbacks += 1
                out.append(self.memory.take(check.key, check.limit, check.cost))
            else:
                out.append(None)
        return out

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    def __repr__(self) -> str:
        return (
            f"<RateLimitStores {self.memory!r} redis={self.redis!r}"
            f" fallbacks={self.fallbacks} store_errors={self.store_errors}>"
        )
