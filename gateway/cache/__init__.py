"""HTTP caching (RFC 9111 shared cache).

policy.py   Cache-Control parsing, storability (section 3), freshness (4.2), Age, Vary
store.py    Entry and the per-worker MemoryStore (LRU bounded in bytes)
The filter that uses them is gateway/filters/cache.py.
"""

from gateway.cache.store import Entry, MemoryStore

__all__ = ["Entry", "MemoryStore"]
