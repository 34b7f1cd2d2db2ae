"""Bucket stores for rate limiting: arithmetic, memory, Redis, and their lifecycle.

bucket.py       token-bucket arithmetic: pure functions on (tokens, last_ts) and a `now`
memory.py       MemoryStore: per-process buckets, bounded LRU
redis_store.py  RedisStore: one atomic multi-key Lua script per event-loop tick's batch,
                on Redis server time; timeouts; cluster hash tags; make_client
breaker.py      Breaker: closed/open/half-open as a transition table
stores.py       RateLimitStores: one per worker, owns the Redis client, reused on reload;
                falls back to memory (fail-open) or None (fail-closed)
bans.py         BanStore / BanState / RedisBans: blocks per client, bans with expiry,
                shared through Redis with a periodic sync (the ban filter reads memory)
dedup.py        DedupStores / MemoryDedup / RedisDedup: idempotency-key claims and
                stored responses (SET NX PX, compare-and-set scripts, polling waiters)
"""

from gateway.store.breaker import Breaker, State
from gateway.store.bucket import Decision, Limit
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import Check, RedisStore, StoreUnavailable
from gateway.store.stores import PolicyCounters, RateLimitStores

__all__ = [
    "Breaker",
    "Check",
    "Decision",
    "Limit",
    "MemoryStore",
    "PolicyCounters",
    "RateLimitStores",
    "RedisStore",
    "State",
    "StoreUnavailable",
]
