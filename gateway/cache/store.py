"""The store interface, and the memory store: an LRU bounded in bytes, one per worker.

Interface (`CacheStore`, both backends). The filter asks `immediate` once per request:
a store that answers lookups from memory (this one) is read with the plain
`lookup_now`, so a memory hit awaits nothing; a shared store (Redis) is read with
`await lookup(...)`. `put(entry, then)` stores and calls `then(stored)` once done (at
once here, after the round trip for Redis), so collapsed misses are released only
when the entry can be found. `refreshed(entry)` writes back headers a 304 changed;
`flush()` waits for writes in flight. `purge(key=, prefix=, tag=)` removes entries by
their operator key (entry.py: the URL form `host/path?query`), by a prefix of it, or
by tag, and says how many it removed.

Memory layout. Two maps, as Varnish and nginx do for Vary: `_vary` gives, per primary
key, the request header names the stored responses vary on; the entry itself lives
under primary key + those headers' values (the secondary key, RFC 9111 4.1). A new
response for a primary key replaces its Vary names; entries stored under older names
simply stop being found and age out. Two indexes serve purge: `_by_url` (url -> entry
keys) and `_by_tag` (tag -> entry keys); an entry is linked into both when stored and
unlinked when replaced, removed or evicted, and an index set that empties is deleted,
so the indexes never hold more names than the live entries do.

Invariant: `bytes` (the sum of the entries' `size`) never exceeds `max_bytes` after a
`put` returns; an entry larger than the whole store is not stored. `clock` is the
monotonic time source of the cache (tests replace it with a fake one). Purge here is
per worker process: each worker has its own store (the admin API asks every worker;
a purge across instances needs Redis). Purge by prefix scans the URL index (O(URLs)).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from multidict import MultiMapping

from gateway.cache.entry import ENTRY_OVERHEAD_BYTES, Entry, secondary_key

__all__ = ["ENTRY_OVERHEAD_BYTES", "CacheStore", "Entry", "MemoryStore", "purge_target"]


class CacheStore(Protocol):
    """What the cache filter and the admin API need of a store (module note)."""

    clock: Callable[[], float]
    immediate: bool
    bytes: int  # bytes of entries held in this process (0 for Redis)

    def lookup_now(self, primary: str, h: MultiMapping[str]) -> Entry | None: ...

    async def lookup(self, primary: str, h: MultiMapping[str]) -> Entry | None: ...

    def known(self, primary: str) -> bool: ...

    def put(self, entry: Entry, then: Callable[[bool], None]) -> None: ...

    def refreshed(self, entry: Entry) -> None: ...

    async def purge(
        self, *, key: str | None = None, prefix: str | None = None, tag: str | None = None
    ) -> int: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


def purge_target(key: str | None, prefix: str | None, tag: str | None) -> tuple[str, str]:
    """(kind, value) of a purge request; ValueError unless exactly one is given.

    A scheme in front of a key or prefix (`https://host/p`) is dropped: entries are
    named `host/path?query`, and a purge is meant for every scheme.
    """
    given = [(k, v) for k, v in (("key", key), ("prefix", prefix), ("tag", tag)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of key, prefix, tag")
    kind, value = given[0]
    if kind != "tag":
        for scheme in ("http://", "https://"):
            if value[: len(scheme)].lower() == scheme:
                value = value[len(scheme) :]
        host, slash, rest = value.partition("/")
        value = host.lower() + slash + rest
    if not value:
        raise ValueError(f"{kind} must not be empty")
    return kind, value


class MemoryStore:
    """LRU of Entries bounded in bytes; see the module note."""

    __slots__ = (
        "_by_tag",
        "_by_url",
        "_entries",
        "_vary",
        "bytes",
        "clock",
        "evictions",
        "max_bytes",
        "purged",
    )

    immediate = True

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.evictions = 0
        self.purged = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._vary: dict[str, tuple[str, ...]] = {}
        self._by_url: dict[str, set[str]] = {}
        self._by_tag: dict[str, set[str]] = {}

    # -- lookups (plain calls: the memory hit path awaits nothing) -----------------

    def vary(self, primary: str) -> tuple[str, ...] | None:
        """The Vary names of the responses stored for `primary`; None if none stored."""
        return self._vary.get(primary)

    def known(self, primary: str) -> bool:
        return primary in self._vary

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def lookup_now(self, primary: str, h: MultiMapping[str]) -> Entry | None:
        vary = self._vary.get(primary)
        if vary is None:
            return None
        key = primary + "\x01" if not vary else secondary_key(primary, vary, h)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    async def lookup(self, primary: str, h: MultiMapping[str]) -> Entry | None:
        return self.lookup_now(primary, h)

    # -- writes ----------------------------------------------------------------------

    def put(self, entry: Entry, then: Callable[[bool], None] | None = None) -> None:
        stored = self.store(entry)
        if then is not None:
            then(stored)

    def store(self, entry: Entry, vary: tuple[str, ...] | None = None) -> bool:
        """Store (or replace) `entry`; False when it cannot fit even in an empty store."""
        self.remove(entry.key)
        if entry.size > self.max_bytes:
            return False
        self._vary[entry.primary] = entry.vary if vary is None else vary
        self._entries[entry.key] = entry
        self._link(entry)
        self.bytes += entry.size
        self._shrink()
        return True

    def refreshed(self, entry: Entry) -> None:
        """`entry`'s headers changed (a 304 refreshed them): recount its bytes."""
        if self._entries.get(entry.key) is not entry:
            return
        self.bytes -= entry.size
        entry.resize()
        self.bytes += entry.size
        self._shrink()

    resized = refreshed

    def remove(self, key: str) -> bool:
        old = self._entries.pop(key, None)
        if old is None:
            return False
        self.bytes -= old.size
        self._unlink(old)
        return True

    def set_max_bytes(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._shrink()

    async def purge(
        self, *, key: str | None = None, prefix: str | None = None, tag: str | None = None
    ) -> int:
        kind, value = purge_target(key, prefix, tag)
        if kind == "tag":
            keys = list(self._by_tag.get(value, ()))
        elif kind == "key":
            keys = list(self._by_url.get(value, ()))
        else:
            keys = [k for url, ks in self._by_url.items() if url.startswith(value) for k in ks]
        removed = sum(self.remove(k) for k in keys)
        self.purged += removed
        return removed

    async def flush(self) -> None:
        return None  # writes are done when put returns

    async def close(self) -> None:
        return None

    # -- bookkeeping -------------------------------------------------------------------

    def _link(self, entry: Entry) -> None:
        self._by_url.setdefault(entry.url, set()).add(entry.key)
        for t in entry.tags:
            self._by_tag.setdefault(t, set()).add(entry.key)

    def _unlink(self, entry: Entry) -> None:
        _discard(self._by_url, entry.url, entry.key)
        for t in entry.tags:
            _discard(self._by_tag, t, entry.key)

    def _shrink(self) -> None:
        entries = self._entries
        while self.bytes > self.max_bytes and entries:
            _, old = entries.popitem(last=False)
            self.bytes -= old.size
            self._unlink(old)
            self.evictions += 1
        if len(self._vary) > 2 * len(entries) + 64:  # forget Vary names of evicted keys
            live = {e.primary for e in entries.values()}
            self._vary = {p: v for p, v in self._vary.items() if p in live}

    def index_sizes(self) -> tuple[int, int]:
        """(urls, tags) in the purge indexes: bounded by the live entries."""
        return len(self._by_url), len(self._by_tag)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<MemoryStore {len(self._entries)} entries {self.bytes}/{self.max_bytes} B"
            f" evictions={self.evictions} tags={len(self._by_tag)} purged={self.purged}>"
        )


def _discard(index: dict[str, set[str]], name: str, key: str) -> None:
    keys = index.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[name]
