"""Entry: one stored response, its keys, and its encodings (in memory and for Redis).

Keys. Every entry has three names:
- `url`, the operator's name for it and what purge by key / prefix matches:
  `host/path?query` as the cache key holds it (lower-case host without port, raw path,
  the query after the route's `key.query` selection; no `?` when that is empty);
- `primary` = url + NUL + route + NUL + scheme + NUL + the configured key headers: the
  URL comes first so that a key (`url + NUL`) and a prefix are both prefixes of the
  primary key, in memory and in Redis (a SCAN MATCH pattern);
- `key` = primary + SOH + the values of the request headers the response varies on
  (the secondary key, RFC 9111 4.1): one entry per Accept-Encoding variant, so a
  compressed body is stored compressed and a hit never compresses again.

Pre-serialised head. `block` is the stored header fields as HTTP/1.1 lines (latin-1),
made once when the headers are set (stored, or refreshed by a 304), so a hit's
response head costs one bytes concatenation instead of formatting every field again
(respond.py's RawResponse uses it when no filter changed the headers, see answer.py).

Redis form (`encode` / `decode`): one string value, an orjson header object, a
newline (JSON text holds none), then the body bytes. `stored_at` is in the clock of
the store: wall time for Redis (shared by every instance), monotonic for memory.
"""

from __future__ import annotations

import math

import orjson
from multidict import CIMultiDict, MultiMapping

from gateway.cache.policy import CacheControl, parse_cache_control

__all__ = ["ENTRY_OVERHEAD_BYTES", "Entry", "secondary_key"]

# Bookkeeping per entry (objects, key, dict slots, the head block), counted in max_bytes.
ENTRY_OVERHEAD_BYTES = 256


def secondary_key(primary: str, vary: tuple[str, ...], h: MultiMapping[str]) -> str:
    """The entry key for a request: primary + the values of the Vary-named headers."""
    if not vary:
        return primary + "\x01"
    return primary + "\x01" + "\x00".join(",".join(h.getall(n, ())) for n in vary)


class Entry:
    """One stored response. `headers` exclude Content-Length, Age and Cache-Status."""

    __slots__ = (
        "age0",
        "block",
        "body",
        "cc",
        "etag",
        "fast",
        "headers",
        "key",
        "last_modified",
        "lifetime",
        "md",
        "memo",
        "primary",
        "reason",
        "size",
        "status",
        "stored_at",
        "tags",
        "url",
        "vary",
        "wire",
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
        tags: tuple[str, ...] = (),
        vary: tuple[str, ...] = (),
    ) -> None:
        self.primary = primary
        self.url = primary.partition("\x00")[0]
        self.key = key
        self.status = status
        self.reason = reason
        self.body = body
        self.tags = tags
        self.vary = vary
        self.set_headers(headers, cc, lifetime, stored_at, age0)

    def set_headers(
        self,
        headers: list[tuple[str, str]],
        cc: CacheControl,
        lifetime: float,
        stored_at: float,
        age0: float,
    ) -> None:
        self.headers = headers
        self.md: CIMultiDict[str] = CIMultiDict(headers)
        # answer.py: (age s, Cache-Status text, Age value, Cache-Status value, head bytes)
        self.memo: tuple[int, str, str, str, bytes] | None = None
        # filters/cache.py fast_hit: (age s, ttl s, head bytes) of the last fresh hit
        self.fast: tuple[int, int, bytes] | None = None
        # respond.py fast_hit_response: (head, status line + head, Content-Length line)
        self.wire: tuple[bytes, bytes, bytes] | None = None
        self.block = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1", "replace")
        self.cc = cc
        self.lifetime = lifetime  # freshness lifetime, seconds
        self.stored_at = stored_at  # clock() when received (or last revalidated)
        self.age0 = age0  # the upstream's Age then
        self.etag = self.md.get("etag")
        self.last_modified = self.md.get("last-modified")
        self.resize()

    def resize(self) -> None:
        self.size = (
            ENTRY_OVERHEAD_BYTES
            + 2 * len(self.key)
            + len(self.body)
            + 2 * len(self.block)
            + sum(len(t) for t in self.tags)
        )

    def age(self, now: float) -> float:
        """RFC 9111 4.2.3, simplified: the upstream's Age plus our resident time."""
        return self.age0 + max(0.0, now - self.stored_at)

    def ttl(self, now: float) -> float:
        """Seconds of freshness left; negative once stale."""
        return self.lifetime - self.age(now)

    def keep_s(self, now: float, extra_s: float) -> int:
        """Seconds a shared store should keep this entry: freshness left, the stale
        windows it may still be served in (RFC 5861), and `extra_s` for revalidation."""
        cc = self.cc
        stale = 0
        if not cc.must_revalidate:
            stale = max(cc.stale_while_revalidate or 0, cc.stale_if_error or 0)
        return max(1, math.ceil(max(0.0, self.ttl(now)) + stale + extra_s))

    @property
    def validators(self) -> bool:
        return self.etag is not None or self.last_modified is not None

    def encode(self) -> bytes:
        meta = {
            "p": self.primary,
            "k": self.key,
            "s": self.status,
            "r": self.reason,
            "h": self.headers,
            "l": self.lifetime,
            "t": self.stored_at,
            "a": self.age0,
            "g": self.tags,
            "v": self.vary,
        }
        return orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """The inverse of encode; ValueError (or KeyError/TypeError) when malformed."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("no header separator")
        m = orjson.loads(head)
        headers = [(str(k), str(v)) for k, v in m["h"]]
        cc = parse_cache_control(v for k, v in headers if k.lower() == "cache-control")
        return cls(
            primary=m["p"],
            key=m["k"],
            status=int(m["s"]),
            reason=str(m["r"]),
            headers=headers,
            body=body,
            cc=cc,
            lifetime=float(m["l"]),
            stored_at=float(m["t"]),
            age0=float(m["a"]),
            tags=tuple(m["g"]),
            vary=tuple(m["v"]),
        )

    def __repr__(self) -> str:
        return (
            f"<Entry {self.url!r} {self.status} {len(self.body)} B lifetime={self.lifetime}"
            f" tags={list(self.tags)}>"
        )
