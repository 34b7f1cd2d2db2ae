"""The memory store: cached responses in an LRU bounded in bytes, one per worker.

Two maps, as Varnish and nginx do for Vary: `_vary` gives, per primary key (route,
host, path, configured query and headers), the request header names the stored
responses vary on; the entry itself lives under primary key + those headers' values
(the secondary key, RFC 9111 4.1). A new response for a primary key replaces its Vary
names; entries stored under older names simply stop being found and age out.

Invariant: `bytes` (the sum of the entries' `size`) never exceeds `max_bytes` after a
`put` returns; an entry larger than the whole store is not stored. `clock` is the
monotonic time source of the cache (tests replace it with a fake one).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.cache.policy import CacheControl

__all__ = ["ENTRY_OVERHEAD_BYTES", "Entry", "MemoryStore"]

# Bookkeeping per entry (objects, key, dict slots), counted against max_bytes.
ENTRY_OVERHEAD_BYTES = 256


class Entry:
    """One stored response. `headers` exclude Content-Length, Age and Cache-Status."""

    __slots__ = (
        "age0",
        "body",
        "cc",
        "etag",
        "headers",
        "key",
        "last_modified",
        "lifetime",
        "primary",
        "reason",
        "size",
        "status",
        "stored_at",
    )

    def __init__(
        self,
        *,
        primary: str,
        key: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: bytes,
        cc: CacheControl,
        lifetime: float,
        stored_at: float,
        age0: float,
    ) -> None:
        self.primary = primary
        self.key = key
        self.status = status
        self.reason = reason
        self.body = body
        self.set_headers(headers, cc, lifetime, stored_at, age0)
        self.size = 0
        self.resize()

    def set_headers(
        self,
        headers: list[tuple[str, str]],
        cc: CacheControl,
        lifetime: float,
        stored_at: float,
        age0: float,
    ) -> None:
        self.headers = headers
        self.cc = cc
        self.lifetime = lifetime  # freshness lifetime, seconds
        self.stored_at = stored_at  # clock() when received (or last revalidated)
        self.age0 = age0  # the upstream's Age then
        lower = {k.lower(): v for k, v in headers}
        self.etag = lower.get("etag")
        self.last_modified = lower.get("last-modified")

    def resize(self) -> None:
        self.size = (
            ENTRY_OVERHEAD_BYTES
            + len(self.key)
            + len(self.body)
            + sum(len(k) + len(v) + 4 for k, v in self.headers)
        )

    def age(self, now: float) -> float:
        """RFC 9111 4.2.3, simplified: the upstream's Age plus our resident time."""
        return self.age0 + max(0.0, now - self.stored_at)

    def ttl(self, now: float) -> float:
        """Seconds of freshness left; negative once stale."""
        return self.lifetime - self.age(now)

    @property
    def validators(self) -> bool:
        return self.etag is not None or self.last_modified is not None

    def __repr__(self) -> str:
        return f"<Entry {self.key!r} {self.status} {len(self.body)} B lifetime={self.lifetime}>"


class MemoryStore:
    """LRU of Entries bounded in bytes; see the module note."""

    __slots__ = ("_entries", "_vary", "bytes", "clock", "evictions", "max_bytes")

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._vary: dict[str, tuple[str, ...]] = {}

    def vary(self, primary: str) -> tuple[str, ...] | None:
        """The Vary names of the responses stored for `primary`; None if none stored."""
        return self._vary.get(primary)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, entry: Entry, vary: tuple[str, ...]) -> bool:
        """Store (or replace) `entry`; False when it cannot fit even in an empty store."""
        self.remove(entry.key)
        if entry.size > self.max_bytes:
            return False
        self._vary[entry.primary] = vary
        self._entries[entry.key] = entry
        self.bytes += entry.size
        self._shrink()
        return True

    def resized(self, entry: Entry) -> None:
        """`entry`'s headers changed (a 304 refreshed them): recount its bytes."""
        if self._entries.get(entry.key) is not entry:
            return
        self.bytes -= entry.size
        entry.resize()
        self.bytes += entry.size
        self._shrink()

    def remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size

    def set_max_bytes(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._shrink()

    def _shrink(self) -> None:
        entries = self._entries
        while self.bytes > self.max_bytes and entries:
            _, old = entries.popitem(last=False)
            self.bytes -= old.size
            self.evictions += 1
        if len(self._vary) > 2 * len(entries) + 64:  # forget Vary names of evicted keys
            live = {e.primary for e in entries.values()}
            self._vary = {p: v for p, v in self._vary.items() if p in live}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<MemoryStore {len(self._entries)} entries {self.bytes}/{self.max_bytes} B"
            f" evictions={self.evictions}>"
        )
