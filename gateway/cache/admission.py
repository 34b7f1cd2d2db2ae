"""Admission: whether an upstream response may be stored, and the tee that stores it.

`judge` applies RFC 9111 section 3 (policy.not_storable), the request's own no-store
(5.2.1.5), the "nothing to gain" rule (neither fresh nor revalidatable) and the
route's entry size limit, and says why not, or hands back what storing needs (the
fields kept, parsed Cache-Control, freshness lifetime, Vary names, tags).

`TeeStream` passes an upstream body to the client chunk by chunk and keeps a copy
while it stays within the limit; its `on_end(body)` runs once, with the whole body
when it ends, None when it never does (released early, aborted, failed) or grew too
big, so a body cut short is never stored.

Tags (purge by tag): the route's `tags_header` (Surrogate-Key style, space-separated,
or Cache-Tag style, comma-separated: both separators are accepted) is read from the
response when it is judged. With `strip_tags_header` the header is removed from what
the client receives and from the stored fields, whether or not the response is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from multidict import CIMultiDict, istr

from gateway.cache.policy import (
    CacheControl,
    freshness_lifetime,
    not_storable,
    parse_cache_control,
    vary_names,
)

if TYPE_CHECKING:
    from gateway.upstream import UpstreamResponse

__all__ = ["UNSTORED", "Admitted", "TeeStream", "judge", "merge_304", "parse_tags"]

CACHE_CONTROL = istr("Cache-Control")
EXPIRES = istr("Expires")
# Not kept in an entry: framing (re-made per response) and what we compute per hit.
UNSTORED = frozenset({"content-length", "transfer-encoding", "age", "cache-status"})
MAX_TAGS = 64  # per response: more are ignored (a purge index must stay bounded)
MAX_TAG_CHARS = 256


def parse_tags(values: list[str]) -> tuple[str, ...]:
    """Tags from Surrogate-Key / Cache-Tag field values, de-duplicated, in order."""
    seen: dict[str, None] = {}
    for value in values:
        for tag in value.replace(",", " ").split():
            if len(tag) <= MAX_TAG_CHARS and len(seen) < MAX_TAGS:
                seen[tag] = None
    return tuple(seen)


class Admitted:
    """What storing a judged response needs."""

    __slots__ = ("cc", "headers", "lifetime", "tags", "vary")

    def __init__(
        self,
        headers: list[tuple[str, str]],
        cc: CacheControl,
        lifetime: float,
        vary: tuple[str, ...],
        tags: tuple[str, ...],
    ) -> None:
        self.headers = headers
        self.cc = cc
        self.lifetime = lifetime
        self.vary = vary
        self.tags = tags

    def __repr__(self) -> str:
        return f"<Admitted lifetime={self.lifetime} vary={self.vary} tags={self.tags}>"


def judge(
    *,
    method: str,
    status: int,
    h: CIMultiDict[str],
    length: int | None,
    authorized: bool,
    request_no_store: bool,
    default_ttl: float,
    limit: int,
    tags_header: istr | None,
    strip_tags: bool,
) -> Admitted | str:
    """An Admitted, or why the response is not stored (a Cache-Status detail)."""
    tags: tuple[str, ...] = ()
    if tags_header is not None:
        values = h.getall(tags_header, ())
        if values:
            tags = parse_tags(values)
            if strip_tags:
                del h[tags_header]
    headers = [(k, v) for k, v in h.items() if k.lower() not in UNSTORED]
    cc = parse_cache_control(h.getall(CACHE_CONTROL, ()))
    explicit = cc.s_maxage is not None or cc.max_age is not None or EXPIRES in h
    why = not_storable(method, status, authorized, headers, cc, explicit)
    if why is not None:
        return why
    if request_no_store:
        return "request-no-store"  # 5.2.1.5
    lifetime = freshness_lifetime(status, headers, cc, default_ttl)
    if lifetime <= 0 and not any(k.lower() in ("etag", "last-modified") for k, _ in headers):
        return "stale"  # neither fresh nor revalidatable: nothing to gain
    if length is not None and length > limit:
        return "too-big"
    return Admitted(headers, cc, lifetime, vary_names(headers), tags)


def merge_304(stored: list[tuple[str, str]], fresh: CIMultiDict[str]) -> list[tuple[str, str]]:
    """RFC 9111 3.2: the 304's fields replace the stored ones of the same name."""
    new = [(k, v) for k, v in fresh.items() if k.lower() not in UNSTORED]
    names = {k.lower() for k, _ in new}
    return [(k, v) for k, v in stored if k.lower() not in names] + new


class TeeStream:
    """An upstream body passed through chunk by chunk, a copy kept up to `limit` bytes;
    `on_end(body)` runs once: with the whole body at its end, None if it never gets
    there (released early, aborted, failed) or outgrew the limit."""

    __slots__ = ("_on_end", "_parts", "_size", "_up", "content_length", "limit", "reason", "status")

    def __init__(
        self, up: UpstreamResponse, limit: int, on_end: Callable[[bytes | None], None]
    ) -> None:
        self.status = up.status
        self.reason = up.reason
        self.content_length = up.content_length
        self.limit = limit
        self._up = up
        self._parts: list[bytes] | None = []
        self._size = 0
        self._on_end: Callable[[bytes | None], None] | None = on_end

    async def read(self) -> bytes:
        try:
            chunk = await self._up.read()
        except BaseException:
            self._end(None)
            raise
        if not chunk:
            parts = self._parts
            self._end(b"".join(parts) if parts is not None else None)
        elif self._parts is not None:
            self._size += len(chunk)
            if self._size > self.limit:
                self._parts = None  # too big to store: pass the rest through
            else:
                self._parts.append(chunk)
        return chunk

    async def read_all(self) -> bytes:
        chunks = []
        while chunk := await self.read():
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        self._up.release()
        self._end(None)

    def abort(self) -> None:
        self._up.abort()
        self._end(None)

    def _end(self, body: bytes | None) -> None:
        on_end, self._on_end = self._on_end, None
        self._parts = None
        if on_end is not None:
            on_end(body)

    def __repr__(self) -> str:
        state = "open" if self._on_end is not None else "done"
        return f"<TeeStream {self.status} {state} {self._size} B up={self._up!r}>"
