"""HTTP caching (RFC 9111 shared cache).

policy.py       Cache-Control parsing, storability (section 3), freshness (4.2), Age, Vary
entry.py        Entry: one stored response, its keys (the purge key `host/path?query`),
                its pre-serialised head, its Redis encoding
store.py        CacheStore (the interface both backends offer) and the per-worker
                MemoryStore (LRU bounded in bytes, purge indexes by URL and tag)
redis_store.py  RedisCacheStore: entries shared by every instance, purge across them
admission.py    may a response be stored (judge), tags, the TeeStream that stores it
answer.py       hits and 304s from an entry; the pre-serialised fast path
The filter that uses them is gateway/filters/cache.py. `store_for_config` makes (or
keeps, across a reload) the worker's store.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.cache.entry import Entry
from gateway.cache.redis_store import RedisCacheStore
from gateway.cache.store import CacheStore, MemoryStore
from gateway.config.cache_model import CacheStore as CacheStoreConfig

__all__ = ["CacheStore", "Entry", "MemoryStore", "RedisCacheStore", "store_for_config"]


def store_for_config(
    cfg: CacheStoreConfig,
    previous: CacheStore | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CacheStore:
    """`previous` while it still fits `cfg` (a memory store resized in place, a Redis
    store with the same settings), else a new store; the caller closes the old one."""
    if cfg.backend == "memory":
        if isinstance(previous, MemoryStore):
            previous.set_max_bytes(cfg.max_bytes)
            return previous
        return MemoryStore(cfg.max_bytes, clock)
    if isinstance(previous, RedisCacheStore) and previous.settings == cfg.redis:
        return previous
    return RedisCacheStore(cfg.redis)
