"""The cache filter: an RFC 9111 shared cache for GET and HEAD, per route.

How it works. At load a route's `cache` section becomes one immutable CacheFilter
bound to the worker's MemoryStore (gateway/cache/store.py). Per request:

1. Not GET/HEAD, or a Range request: forwarded untouched (`Cache-Status: fwd=method`
   / `fwd=request`).
2. Lookup: primary key (route, scheme, host, path, configured query parameters and
   headers), then the secondary key from the request headers the stored response's
   Vary names (4.1). A fresh entry (4.2, Age = upstream Age + resident time) is a hit;
   `no-cache` on the entry or the request forces revalidation (5.2.2.4, 5.2.1.4).
3. A stale entry within stale-while-revalidate (RFC 5861 3) is served at once and one
   background request refreshes it. Otherwise it is revalidated: the upstream gets
   If-None-Match / If-Modified-Since from the entry (4.3.1); a 304 refreshes the
   entry's headers and freshness (4.3.4) and the client is answered from the entry; a
   5xx or a connection error within stale-if-error (RFC 5861 4) serves the stale entry.
   must-revalidate, proxy-revalidate and s-maxage turn both stale extensions off.
4. A miss goes upstream once per key: concurrent misses for the same primary key wait
   for the first (the "leader") to finish storing, then look up again (request
   collapsing, as nginx's proxy_cache_lock). Waiters wait at most COLLAPSE_WAIT_S.
5. A storable response (policy.not_storable) is teed: `TeeStream` hands each chunk to
   the client as it arrives and keeps a copy while the body stays within
   max_entry_bytes (a known larger Content-Length is not teed at all); the entry is
   stored when the body ends, never before. A body cut short is not stored.

Hits and 304-refreshed entries answer a client's own conditional (If-None-Match, weak
comparison, else If-Modified-Since) with a 304 (RFC 9110 13.1, 13.2.2, 2xx only).
`Cache-Status` (RFC 9211) says what happened: `gateway; hit; ttl=N`,
`gateway; fwd=miss; fwd-status=200; stored`, `gateway; fwd=stale; fwd-status=304`,
`gateway; fwd=stale; fwd-status=503; detail=stale-if-error`, ... "stored" is said when
the response is being stored; a body that then outgrows max_entry_bytes is not.

Compression runs after (inside) the cache, so entries hold the encoded body and vary
on Accept-Encoding: a hit is never compressed again.

Known gaps: HEAD misses are forwarded and not stored; 206 / Range are not cached;
no purge API; the stored copy is one bytes object per entry (bounded by
max_entry_bytes and the store's max_bytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from multidict import CIMultiDict, istr

from gateway.body import MemoryResponse
from gateway.cache.policy import (
    CacheControl,
    freshness_lifetime,
    http_date,
    not_storable,
    parse_cache_control,
    upstream_age,
    vary_names,
    weak_match,
)
from gateway.cache.store import Entry, MemoryStore
from gateway.config.cache_model import Cache
from gateway.errors import GatewayError
from gateway.exchange import Exchange, Reply
from gateway.pipeline import Next

if TYPE_CHECKING:
    from gateway.upstream import UpstreamResponse

__all__ = ["COLLAPSE_WAIT_S", "CacheFilter", "TeeStream"]

log = logging.getLogger(__name__)

COLLAPSE_WAIT_S = 30.0
CHUNK_BYTES = 64 * 1024

AGE = istr("Age")
CACHE_CONTROL = istr("Cache-Control")
CACHE_STATUS = istr("Cache-Status")
AUTHORIZATION = istr("Authorization")
EXPIRES = istr("Expires")
RANGE = istr("Range")
IF_NONE_MATCH = istr("If-None-Match")
IF_MODIFIED_SINCE = istr("If-Modified-Since")
# Not kept in an entry: framing (re-made per response) and what we compute per hit.
_UNSTORED = frozenset({"content-length", "transfer-encoding", "age", "cache-status"})
# RFC 9110 15.4.5: what a 304 carries of the 200 it stands for.
_NOT_MODIFIED_KEEP = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)

COUNTERS = ("hit", "miss", "stored", "revalidated", "stale_if_error", "stale_while_revalidate")


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


def _merge_304(stored: list[tuple[str, str]], fresh: CIMultiDict[str]) -> list[tuple[str, str]]:
    """RFC 9111 3.2: the 304's fields replace the stored ones of the same name."""
    new = [(k, v) for k, v in fresh.items() if k.lower() not in _UNSTORED]
    names = {k.lower() for k, _ in new}
    return [(k, v) for k, v in stored if k.lower() not in names] + new


class CacheFilter:
    """A route's cache settings, compiled at load; `_inflight` (collapsed misses) and
    the counters are its only state, the entries live in the worker's store."""

    __slots__ = (
        "_default_ttl",
        "_inflight",
        "_key_headers",
        "_limit",
        "_query",
        "_store",
        "counts",
        "refreshing",
        "route",
    )

    def __init__(self, cfg: Cache, store: MemoryStore, *, route: str) -> None:
        self.route = route
        self._store = store
        self._limit = cfg.max_entry_bytes
        self._default_ttl = cfg.default_ttl
        self._key_headers = tuple(istr(h) for h in cfg.key.headers)
        q = cfg.key.query
        self._query: dict[str, int] | None = (
            None if q == "all" else {} if q == "none" else {n: i for i, n in enumerate(q)}
        )
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.refreshing: set[asyncio.Task[None]] = set()  # background revalidations
        self.counts = dict.fromkeys(COUNTERS, 0)

    # -- keys ------------------------------------------------------------------

    def primary_key(self, ex: Exchange) -> str:
        query = ex.query
        if self._query is not None and query:
            order = self._query
            parts = [p for p in query.split("&") if p.partition("=")[0] in order]
            parts.sort(key=lambda p: order[p.partition("=")[0]])  # stable: repeats keep order
            query = "&".join(parts)
        elif self._query is not None:
            query = ""
        h = ex.headers
        hv = "\x00".join(",".join(h.getall(n, ())) for n in self._key_headers)
        return f"{self.route}\x00{ex.scheme}\x00{ex.host}\x00{ex.path}\x00{query}\x00{hv}"

    @staticmethod
    def _secondary(primary: str, vary: tuple[str, ...], h: CIMultiDict[str]) -> str:
        return primary + "\x01" + "\x00".join(",".join(h.getall(n, ())) for n in vary)

    def _lookup(self, primary: str, ex: Exchange) -> Entry | None:
        vary = self._store.vary(primary)
        if vary is None:
            return None
        return self._store.get(self._secondary(primary, vary, ex.headers))

    # -- the request -----------------------------------------------------------

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        if ex.method not in ("GET", "HEAD") or RANGE in ex.headers:
            reply = await next(ex)
            fwd = "method" if ex.method not in ("GET", "HEAD") else "request"
            reply.headers[CACHE_STATUS] = f"gateway; fwd={fwd}"
            return reply
        req_cc = parse_cache_control(ex.headers.getall(CACHE_CONTROL, ()))
        primary = self.primary_key(ex)
        store = self._store
        entry: Entry | None = None
        for attempt in (0, 1):
            now = store.clock()
            entry = self._lookup(primary, ex)
            if entry is not None and not req_cc.no_cache:
                ttl = entry.ttl(now)
                cc = entry.cc
                if ttl > 0 and not cc.no_cache and self._acceptable(req_cc, entry, now):
                    self.counts["hit"] += 1
                    return self._answer(ex, entry, now, f"hit; ttl={int(ttl)}")
                swr = cc.stale_while_revalidate
                if ttl <= 0 and swr is not None and -ttl <= swr and not cc.must_revalidate:
                    self.counts["stale_while_revalidate"] += 1
                    self._refresh(ex, primary, entry, next)
                    return self._answer(
                        ex, entry, now, f"hit; ttl={int(ttl)}; detail=stale-while-revalidate"
                    )
            waiter = self._inflight.get(primary)
            if attempt or waiter is None or ex.method != "GET" or req_cc.no_store:
                break
            await asyncio.wait({waiter}, timeout=COLLAPSE_WAIT_S)  # then look up again
        if entry is not None:
            return await self._revalidate(ex, next, primary, entry, req_cc)
        self.counts["miss"] += 1
        fwd = "miss" if store.vary(primary) is None else "vary-miss"
        fut = self._lead(ex, primary)
        try:
            reply = await next(ex)
        except BaseException:
            self._done(primary, fut)
            raise
        return self._admit(ex, reply, primary, fwd, fut, req_cc)

    @staticmethod
    def _acceptable(req: CacheControl, entry: Entry, now: float) -> bool:
        """The request's own limits (RFC 9111 5.2.1.1, 5.2.1.3)."""
        if req.max_age is not None and entry.age(now) > req.max_age:
            return False
        return req.min_fresh is None or entry.ttl(now) >= req.min_fresh

    def _lead(self, ex: Exchange, primary: str) -> asyncio.Future[None] | None:
        """Become the request others with this key wait for (GET only, first one)."""
        if ex.method != "GET" or primary in self._inflight:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[primary] = fut
        return fut

    def _done(self, primary: str, fut: asyncio.Future[None] | None) -> None:
        if fut is None:
            return
        if self._inflight.get(primary) is fut:
            del self._inflight[primary]
        if not fut.done():
            fut.set_result(None)

    # -- storing -----------------------------------------------------------------

    def _admit(
        self,
        ex: Exchange,
        reply: Reply,
        primary: str,
        fwd: str,
        fut: asyncio.Future[None] | None,
        req_cc: CacheControl,
    ) -> Reply:
        """Tee a storable reply into the store; say what happened in Cache-Status."""
        status = reply.status
        h = reply.headers
        headers = [(k, v) for k, v in h.items() if k.lower() not in _UNSTORED]
        cc = parse_cache_control(h.getall(CACHE_CONTROL, ()))
        explicit = cc.s_maxage is not None or cc.max_age is not None or EXPIRES in h
        why = not_storable(ex.method, status, AUTHORIZATION in ex.headers, headers, cc, explicit)
        lifetime = freshness_lifetime(status, headers, cc, self._default_ttl)
        if why is None and req_cc.no_store:
            why = "request-no-store"  # 5.2.1.5
        if (
            why is None
            and lifetime <= 0
            and not any(k.lower() in ("etag", "last-modified") for k, _ in headers)
        ):
            why = "stale"  # neither fresh nor revalidatable: nothing to gain
        up = reply.stream
        length = up.content_length if up is not None else len(reply.body)
        if why is None and length is not None and length > self._limit:
            why = "too-big"
        state = f"gateway; fwd={fwd}; fwd-status={status}"
        if why is not None:
            self._done(primary, fut)
            h[CACHE_STATUS] = f"{state}; detail={why}"
            return reply
        store = self._store
        received = store.clock()
        key = self._secondary(primary, vary_names(headers), ex.headers)
        vary = vary_names(headers)

        def on_end(body: bytes | None) -> None:
            if body is not None:
                entry = Entry(
                    primary=primary,
                    key=key,
                    status=status,
                    reason=up.reason if up is not None else "",
                    headers=headers,
                    body=body,
                    cc=cc,
                    lifetime=lifetime,
                    stored_at=received,
                    age0=upstream_age(headers),
                )
                if store.put(entry, vary):
                    self.counts["stored"] += 1
            self._done(primary, fut)

        h[CACHE_STATUS] = f"{state}; stored"
        if up is None:
            on_end(reply.body)
        else:
            reply.stream = cast("UpstreamResponse", TeeStream(up, self._limit, on_end))
        return reply

    # -- stale entries -----------------------------------------------------------

    async def _revalidate(
        self, ex: Exchange, next: Next, primary: str, entry: Entry, req_cc: CacheControl
    ) -> Reply:
        """Ask the upstream whether the stale `entry` still holds (RFC 9111 4.3)."""
        h = ex.headers
        saved = [(k, v) for k, v in h.items() if k in (IF_NONE_MATCH, IF_MODIFIED_SINCE)]
        h.popall(IF_NONE_MATCH, None)
        h.popall(IF_MODIFIED_SINCE, None)
        if entry.etag is not None:
            h[IF_NONE_MATCH] = entry.etag
        if entry.last_modified is not None:
            h[IF_MODIFIED_SINCE] = entry.last_modified
        fut = self._lead(ex, primary)
        try:
            reply = await next(ex)
        except GatewayError as exc:
            self._done(primary, fut)
            self._restore(h, saved)
            if self._stale_on_error(entry):
                return self._stale_if_error(ex, entry, exc.status)
            raise
        except BaseException:
            self._done(primary, fut)
            raise
        self._restore(h, saved)
        if reply.status == 304 and entry.validators:
            if reply.stream is not None:
                reply.stream.release()
            now = self._store.clock()
            headers = _merge_304(entry.headers, reply.headers)
            cc = parse_cache_control(v for k, v in headers if k.lower() == "cache-control")
            lifetime = freshness_lifetime(entry.status, headers, cc, self._default_ttl)
            entry.set_headers(headers, cc, lifetime, now, upstream_age(headers))
            self._store.resized(entry)
            self._done(primary, fut)
            self.counts["revalidated"] += 1
            return self._answer(ex, entry, now, "fwd=stale; fwd-status=304")
        if reply.status >= 500 and self._stale_on_error(entry):
            if reply.stream is not None:
                reply.stream.release()
            self._done(primary, fut)
            return self._stale_if_error(ex, entry, reply.status)
        return self._admit(ex, reply, primary, "stale", fut, req_cc)

    def _stale_on_error(self, entry: Entry) -> bool:
        sie = entry.cc.stale_if_error
        if sie is None or entry.cc.must_revalidate:
            return False
        return -entry.ttl(self._store.clock()) <= sie

    def _stale_if_error(self, ex: Exchange, entry: Entry, status: int) -> Reply:
        self.counts["stale_if_error"] += 1
        now = self._store.clock()
        return self._answer(
            ex, entry, now, f"fwd=stale; fwd-status={status}; detail=stale-if-error"
        )

    @staticmethod
    def _restore(h: CIMultiDict[str], saved: list[tuple[str, str]]) -> None:
        """Put the client's own conditional headers back in place of ours."""
        h.popall(IF_NONE_MATCH, None)
        h.popall(IF_MODIFIED_SINCE, None)
        for k, v in saved:
            h.add(k, v)

    def _refresh(self, ex: Exchange, primary: str, entry: Entry, next: Next) -> None:
        """Revalidate `entry` in the background (stale-while-revalidate), once per key."""
        if primary in self._inflight:
            return
        bg = Exchange(
            method="GET",
            path=ex.path,
            query=ex.query,
            headers=CIMultiDict(ex.headers),
            host=ex.host,
            scheme=ex.scheme,
            client_ip=ex.client_ip,
            client_port=ex.client_port,
            request_id=ex.request_id,
            route=ex.route,
            body=None,
            content_length=None,
            version=ex.version,
            started_at=ex.started_at,
            peer_ip=ex.peer_ip,
            trusted_peer=ex.trusted_peer,
            tls=ex.tls,
            listener=ex.listener,
        )
        self._lead(bg, primary)  # claimed now, so a burst of stale hits starts one refresh
        task = asyncio.ensure_future(self._background(bg, next, primary, entry))
        self.refreshing.add(task)
        task.add_done_callback(self.refreshing.discard)

    async def _background(self, ex: Exchange, next: Next, primary: str, entry: Entry) -> None:
        claimed = self._inflight.pop(primary, None)  # _revalidate leads from here on
        try:
            reply = await self._revalidate(ex, next, primary, entry, CacheControl())
            if reply.stream is not None:
                try:
                    await reply.stream.read_all()  # through the tee: stores the new copy
                finally:
                    reply.stream.release()
        except Exception:
            log.warning("cache refresh of %s failed (route %s)", ex.target, self.route)
        finally:
            if claimed is not None and not claimed.done():
                claimed.set_result(None)

    # -- answers -----------------------------------------------------------------

    def _answer(self, ex: Exchange, entry: Entry, now: float, status_text: str) -> Reply:
        """The stored response, or a 304 when the client's conditional says it has it."""
        h: CIMultiDict[str] = CIMultiDict(entry.headers)
        h[AGE] = str(int(entry.age(now)))
        h[CACHE_STATUS] = f"gateway; {status_text}"
        if 200 <= entry.status < 300 and self._not_modified(ex.headers, entry):
            keep: CIMultiDict[str] = CIMultiDict(
                (k, v) for k, v in h.items() if k.lower() in _NOT_MODIFIED_KEEP
            )
            keep[AGE] = h[AGE]
            keep[CACHE_STATUS] = h[CACHE_STATUS]
            return Reply(304, keep)
        return Reply(
            entry.status,
            h,
            stream=cast(
                "UpstreamResponse",
                MemoryResponse(entry.status, entry.reason, entry.body, CHUNK_BYTES),
            ),
        )

    @staticmethod
    def _not_modified(h: CIMultiDict[str], entry: Entry) -> bool:
        inm = h.get(IF_NONE_MATCH)
        if inm is not None:  # RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since
            return entry.etag is not None and weak_match(entry.etag, inm)
        ims = http_date(h.get(IF_MODIFIED_SINCE))
        modified = http_date(entry.last_modified)
        return ims is not None and modified is not None and modified <= ims

    def __repr__(self) -> str:
        return (
            f"<CacheFilter route={self.route} max_entry={self._limit} "
            f"inflight={len(self._inflight)} counts={self.counts}>"
        )
