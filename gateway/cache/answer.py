"""Answers from the cache: the stored response (with Age and Cache-Status), or a 304.

The fast path. A hit's Reply carries a full copy of the entry's header fields (outer
filters may read and edit them as on any reply) and, as its body, a `CachedBody`
that also holds the entry's pre-serialised header lines plus the Age and
Cache-Status lines. `CachedBody.head_for(headers)` hands those bytes to respond.py
only when the reply's headers are still exactly what this module made: multidict
versions change on every edit, so any filter that added, removed or replaced a field
afterwards turns the fast path off for that reply and respond.py formats the headers
as usual. So the optimisation can never send a field an outer filter removed.
`hit_head` formats the head (memoised per Age second) for both this and the
server's fast path (gateway/filters/cache.py), so both send the same lines.

Conditionals (RFC 9110 13.1, 13.2.2): a client's If-None-Match (weak comparison),
else If-Modified-Since, matching a 2xx entry is answered 304 with the fields a 304
carries of the 200 it stands for (RFC 9110 15.4.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from multidict import CIMultiDict, getversion, istr

from gateway.body import MemoryResponse
from gateway.cache.entry import Entry
from gateway.cache.policy import http_date, weak_match
from gateway.exchange import Exchange, Reply

if TYPE_CHECKING:
    from gateway.upstream import UpstreamResponse

__all__ = ["CHUNK_BYTES", "CachedBody", "answer", "hit_head", "not_modified"]

CHUNK_BYTES = 64 * 1024
AGE = istr("Age")
CACHE_STATUS = istr("Cache-Status")
IF_NONE_MATCH = istr("If-None-Match")
IF_MODIFIED_SINCE = istr("If-Modified-Since")
# RFC 9110 15.4.5: what a 304 carries of the 200 it stands for.
_NOT_MODIFIED_KEEP = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)


class CachedBody(MemoryResponse):
    """A hit's body, and its head pre-serialised for as long as nobody edits it."""

    __slots__ = ("_head", "_headers", "_version")

    def __init__(
        self, status: int, reason: str, data: bytes, head: bytes, headers: CIMultiDict[str]
    ) -> None:
        super().__init__(status, reason, data, CHUNK_BYTES)
        self._head = head
        self._headers = headers
        self._version = getversion(cast(Any, headers))

    def head_for(self, headers: CIMultiDict[str]) -> bytes | None:
        """The header lines of `headers` (no Date, Content-Length), if still unedited."""
        if headers is self._headers and getversion(cast(Any, headers)) == self._version:
            return self._head
        return None

    def body(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"<CachedBody {self.status} {self.content_length} bytes>"


def hit_head(entry: Entry, now: float, status_text: str) -> tuple[str, str, bytes]:
    """(Age value, Cache-Status value, the entry's header lines with both appended).

    The one place a hit's head is formatted: `answer` and the server's fast path
    (`CacheFilter.fast_hit`) both use it, so both send the same bytes."""
    age_s = int(entry.age(now))
    memo = entry.memo  # hits within one second of Age share their formatted fields
    if memo is not None and memo[0] == age_s and memo[1] == status_text:
        return memo[2], memo[3], memo[4]
    age = str(age_s)
    cache_status = "gateway; " + status_text
    lines = f"Age: {age}\r\nCache-Status: {cache_status}\r\n"
    head = entry.block + lines.encode("latin-1")
    entry.memo = (age_s, status_text, age, cache_status, head)
    return age, cache_status, head


def answer(ex: Exchange, entry: Entry, now: float, status_text: str) -> Reply:
    """The stored response, or a 304 when the client's conditional says it has it."""
    h = entry.md.copy()
    age, cache_status, head = hit_head(entry, now, status_text)
    h[AGE] = age
    h[CACHE_STATUS] = cache_status
    rh = ex.headers
    if (
        (IF_NONE_MATCH in rh or IF_MODIFIED_SINCE in rh)
        and 200 <= entry.status < 300
        and not_modified(rh, entry)
    ):
        keep: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in h.items() if k.lower() in _NOT_MODIFIED_KEEP
        )
        keep[AGE] = age
        keep[CACHE_STATUS] = cache_status
        return Reply(304, keep)
    body = CachedBody(entry.status, entry.reason, entry.body, head, h)
    return Reply(entry.status, h, stream=cast("UpstreamResponse", body))


def not_modified(h: CIMultiDict[str], entry: Entry) -> bool:
    inm = h.get(IF_NONE_MATCH)
    if inm is not None:  # RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since
        return entry.etag is not None and weak_match(entry.etag, inm)
    ims = http_date(h.get(IF_MODIFIED_SINCE))
    modified = http_date(entry.last_modified)
    return ims is not None and modified is not None and modified <= ims
