"""The in-memory bucket store: per process, bounded, synchronous.

Buckets live in a dict per worker process, so with N workers (or N gateway hosts) a
client can be admitted up to N times the limit: it is the default when no Redis is
configured and the fail-open fallback while Redis is unusable, not a shared limit.

The dict is an LRU of at most `max_keys` buckets (an OrderedDict moved to the end on
use). Dropping a bucket refills it, so under more live keys than `max_keys` the least
recently seen clients may get a fresh burst: size it above the number of clients
active within one refill time. A full bucket is deleted at once, since an absent key
means exactly that (a client that stays under its limit costs no memory after its
bucket refilled, checked lazily on its next request).

Time comes from the injected clock (`time.monotonic` by default; a fake in tests).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.store.bucket import Decision, Limit, take

__all__ = ["MemoryStore"]


class MemoryStore:
    __slots__ = ("_buckets", "clock", "evictions", "max_keys")

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.evictions = 0  # buckets dropped to stay under max_keys

    def take(self, key: str, limit: Limit, cost: int) -> Decision:
        """Check `key`'s bucket and spend `cost` tokens if it holds them."""
        now = self.clock()
        state = self._buckets.get(key)
        if state is None:
            decision, level = take(None, now, now, limit, cost)
        else:
            decision, level = take(state[0], state[1], now, limit, cost)
        if level >= limit.burst:
            if state is not None:
                del self._buckets[key]
            return decision
        last = now if state is None else max(state[1], now)
        self._buckets[key] = (level, last)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
            self.evictions += 1
        return decision

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"<MemoryStore keys={len(self._buckets)}/{self.max_keys} evictions={self.evictions}>"
