"""The cache filter: an RFC 9111 shared cache for GET and HEAD, per route.

How it works. At load a route's `cache` section becomes one immutable CacheFilter
bound to the worker's store (gateway/cache/store.py: memory, or Redis shared by every
instance). Per request:

1. Not GET/HEAD, or a Range request: forwarded untouched (`Cache-Status: fwd=method`
   / `fwd=request`).
2. Lookup: primary key (the URL form `host/path?query` with the configured query
   parameters, then route, scheme and configured headers: gateway/cache/entry.py),
   then the secondary key from the request headers the stored response's Vary names
   (4.1). A fresh entry (4.2, Age = upstream Age + resident time) is a hit; `no-cache`
   on the entry or the request forces revalidation (5.2.2.4, 5.2.1.4). A memory store
   is read with a plain call (a memory hit awaits nothing); Redis with one round trip.
3. A stale entry within stale-while-revalidate (RFC 5861 3) is served at once and one
   background request refreshes it. Otherwise it is revalidated: the upstream gets
   If-None-Match / If-Modified-Since from the entry (4.3.1); a 304 refreshes the
   entry's headers and freshness (4.3.4) and the client is answered from the entry; a
   5xx or a connection error within stale-if-error (RFC 5861 4) serves the stale entry.
   must-revalidate, proxy-revalidate and s-maxage turn both stale extensions off.
4. A miss goes upstream once per key and process: concurrent misses for the same
   primary key wait for the first (the "leader") to finish storing, then look up
   again (request collapsing, as nginx's proxy_cache_lock). Waiters wait at most
   COLLAPSE_WAIT_S. With Redis, instances do not wait on each other.
5. A storable response (gateway/cache/admission.py) is teed to the client and stored
   when its body ends, never before; a body cut short is not stored.

Hits (gateway/cache/answer.py) answer a client's own conditional with a 304.

The server's fast path. On a route where nothing runs before the cache
(`fast_path_filter`, computed at load into Route.cache_fast), server.py asks
`fast_hit` before it builds an Exchange: a fresh memory hit for a plain GET (no
Range, request Cache-Control or conditional) is written straight from the entry's
pre-serialised head (respond.py fast_hit_response), with the same bytes, counters,
metrics and access log line as the chain would give it (tests/cache/test_fast_path.py);
anything else takes the chain.
`Cache-Status` (RFC 9211) says what happened: `gateway; hit; ttl=N`,
`gateway; fwd=miss; fwd-status=200; stored`, `gateway; fwd=stale; fwd-status=304`,
`gateway; fwd=stale; fwd-status=503; detail=stale-if-error`, ... "stored" is said when
the response is being stored; a body that then outgrows max_entry_bytes is not.

Compression runs after (inside) the cache, so entries hold the encoded body and vary
on Accept-Encoding: a hit is never compressed again.

Known gaps: HEAD misses are forwarded and not stored; 206 / Range are not cached;
the stored copy is one bytes object per entry (bounded by max_entry_bytes and, in
memory, the store's max_bytes); Accept-Encoding variants are keyed on the raw header
value, so two spellings of the same preference are two entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from multidict import CIMultiDict, MultiMapping, istr

from gateway.cache.admission import TeeStream, judge, merge_304
from gateway.cache.answer import answer, hit_head
from gateway.cache.entry import Entry, secondary_key
from gateway.cache.policy import (
    CacheControl,
    freshness_lifetime,
    parse_cache_control,
    upstream_age,
)
from gateway.cache.store import CacheStore
from gateway.config.cache_model import Cache
from gateway.errors import GatewayError
from gateway.exchange import Exchange, Reply
from gateway.pipeline import FILTER_ORDER, Filter, Next

if TYPE_CHECKING:
    from gateway.upstream import UpstreamResponse

__all__ = ["COLLAPSE_WAIT_S", "CacheFilter", "TeeStream", "fast_path_filter"]

log = logging.getLogger(__name__)

COLLAPSE_WAIT_S = 30.0

CACHE_CONTROL = istr("Cache-Control")
CACHE_STATUS = istr("Cache-Status")
AUTHORIZATION = istr("Authorization")
RANGE = istr("Range")
IF_NONE_MATCH = istr("If-None-Match")
IF_MODIFIED_SINCE = istr("If-Modified-Since")
NO_DIRECTIVES = CacheControl()  # a request without Cache-Control (read only)

# Plain ints, exported by gateway/observability/features.py. bypass: method or Range;
# served_bytes: body bytes answered from entries.
COUNTERS = (
    "hit",
    "miss",
    "stored",
    "revalidated",
    "stale_if_error",
    "stale_while_revalidate",
    "bypass",
    "served_bytes",
)


class CacheFilter:
    """A route's cache settings, compiled at load; `_inflight` (collapsed misses) and
    the counters are its only state, the entries live in the worker's store."""

    __slots__ = (
        "_default_ttl",
        "_inflight",
        "_key_headers",
        "_limit",
        "_query",
        "_refresh_keys",
        "_store",
        "_strip_tags",
        "_tags_header",
        "counts",
        "refreshing",
        "route",
    )

    def __init__(self, cfg: Cache, store: CacheStore, *, route: str) -> None:
        self.route = route
        self._store = store
        self._limit = cfg.max_entry_bytes
        self._default_ttl = cfg.default_ttl
        self._key_headers = tuple(istr(h) for h in cfg.key.headers)
        self._tags_header = istr(cfg.tags_header) if cfg.tags_header else None
        self._strip_tags = cfg.strip_tags_header
        q = cfg.key.query
        self._query: dict[str, int] | None = (
            None if q == "all" else {} if q == "none" else {n: i for i, n in enumerate(q)}
        )
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.refreshing: set[asyncio.Task[None]] = set()  # background revalidations
        self._refresh_keys: set[str] = set()  # their primary keys
        self.counts = dict.fromkeys(COUNTERS, 0)

    def primary_key(self, ex: Exchange) -> str:
        """`host/path?query` (the purge key), then route, scheme, key headers."""
        return self._primary(ex.host, ex.path, ex.query, ex.scheme, ex.headers)

    def _primary(self, host: str, path: str, query: str, scheme: str, h: MultiMapping[str]) -> str:
        if self._query is not None and query:
            order = self._query
            parts = [p for p in query.split("&") if p.partition("=")[0] in order]
            parts.sort(key=lambda p: order[p.partition("=")[0]])  # stable: repeats keep order
            query = "&".join(parts)
        elif self._query is not None:
            query = ""
        url = f"{host}{path}?{query}" if query else host + path
        if not self._key_headers:
            return f"{url}\x00{self.route}\x00{scheme}\x00"
        hv = "\x00".join(",".join(h.getall(n, ())) for n in self._key_headers)
        return f"{url}\x00{self.route}\x00{scheme}\x00{hv}"

    # -- the server's fast path ---------------------------------------------------

    def fast_hit(
        self,
        host: str,
        path: str,
        query: str,
        scheme: str,
        h: MultiMapping[str],
        max_body_bytes: int,
    ) -> tuple[Entry, bytes] | None:
        """A fresh memory hit for a plain GET, as (entry, head lines); None: the chain.

        For server.py, on routes where `fast_path_filter` found nothing before this
        filter, before any Exchange exists. Exactly the hits `__call__` would answer
        with `answer` and respond.py would send from the pre-serialised head: no
        Range, no request Cache-Control, no conditional (a 304 is the chain's), a
        fresh entry without no-cache, a status with a body, at most `max_body_bytes`.
        Anything else returns None having changed nothing but the entry's LRU place,
        and the request takes the full path (which looks it up again)."""
        store = self._store
        if (
            not store.immediate
            or RANGE in h
            or CACHE_CONTROL in h
            or IF_NONE_MATCH in h
            or IF_MODIFIED_SINCE in h
        ):
            return None
        entry = store.lookup_now(self._primary(host, path, query, scheme, h), h)
        if entry is None:
            return None
        status = entry.status
        if status < 200 or status == 204 or status == 304 or len(entry.body) > max_body_bytes:
            return None
        now = store.clock()
        resident_s = now - entry.stored_at  # entry.age(now), inlined (same floats)
        age = entry.age0 + (resident_s if resident_s > 0.0 else 0.0)
        ttl = entry.lifetime - age
        if ttl <= 0 or entry.cc.no_cache:
            return None
        counts = self.counts
        counts["hit"] += 1
        counts["served_bytes"] += len(entry.body)
        # The head depends on (Age, ttl) in whole seconds: reuse it within one second.
        age_s = int(age)
        ttl_s = int(ttl)
        fast = entry.fast
        if fast is not None and fast[0] == age_s and fast[1] == ttl_s:
            return entry, fast[2]
        head = hit_head(entry, now, f"hit; ttl={ttl_s}")[2]
        entry.fast = (age_s, ttl_s, head)
        return entry, head

    # -- the request -----------------------------------------------------------

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        method = ex.method
        h = ex.headers
        if (method != "GET" and method != "HEAD") or RANGE in h:
            self.counts["bypass"] += 1
            reply = await next(ex)
            fwd = "method" if method not in ("GET", "HEAD") else "request"
            reply.headers[CACHE_STATUS] = f"gateway; fwd={fwd}"
            if self._tags_header is not None and self._strip_tags:
                reply.headers.popall(self._tags_header, None)
            return reply
        req_cc = (
            parse_cache_control(h.getall(CACHE_CONTROL)) if CACHE_CONTROL in h else NO_DIRECTIVES
        )
        primary = self.primary_key(ex)
        store = self._store
        entry: Entry | None = None
        for attempt in (0, 1):
            if store.immediate:
                entry = store.lookup_now(primary, h)
            else:
                waiter = self._inflight.get(primary)
                if not attempt and waiter is not None and primary not in self._refresh_keys:
                    # A shared store: let this process's leader store it, then read once
                    # (not a stale-while-revalidate refresh: the stale entry is served).
                    await asyncio.wait({waiter}, timeout=COLLAPSE_WAIT_S)
                entry = await store.lookup(primary, h)
            if entry is not None and not req_cc.no_cache:
                now = store.clock()
                ttl = entry.ttl(now)
                cc = entry.cc
                if (
                    ttl > 0
                    and not cc.no_cache
                    and (req_cc is NO_DIRECTIVES or self._acceptable(req_cc, entry, now))
                ):
                    counts = self.counts
                    counts["hit"] += 1
                    counts["served_bytes"] += len(entry.body)
                    return answer(ex, entry, now, f"hit; ttl={int(ttl)}")
                swr = cc.stale_while_revalidate
                if ttl <= 0 and swr is not None and -ttl <= swr and not cc.must_revalidate:
                    self.counts["stale_while_revalidate"] += 1
                    self._refresh(ex, primary, entry, next)
                    return answer(
                        ex, entry, now, f"hit; ttl={int(ttl)}; detail=stale-while-revalidate"
                    )
            waiter = self._inflight.get(primary)
            if attempt or waiter is None or method != "GET" or req_cc.no_store:
                break
            await asyncio.wait({waiter}, timeout=COLLAPSE_WAIT_S)  # then look up again
        if entry is not None:
            return await self._revalidate(ex, next, primary, entry, req_cc)
        self.counts["miss"] += 1
        fwd = "vary-miss" if store.known(primary) else "miss"
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
        up = reply.stream
        verdict = judge(
            method=ex.method,
            status=status,
            h=h,
            length=up.content_length if up is not None else len(reply.body),
            authorized=AUTHORIZATION in ex.headers,
            request_no_store=req_cc.no_store,
            default_ttl=self._default_ttl,
            limit=self._limit,
            tags_header=self._tags_header,
            strip_tags=self._strip_tags,
        )
        state = f"gateway; fwd={fwd}; fwd-status={status}"
        if isinstance(verdict, str):
            self._done(primary, fut)
            h[CACHE_STATUS] = f"{state}; detail={verdict}"
            return reply
        store = self._store
        received = store.clock()
        key = secondary_key(primary, verdict.vary, ex.headers)

        def stored(ok: bool) -> None:
            if ok:
                self.counts["stored"] += 1
            self._done(primary, fut)

        def on_end(body: bytes | None) -> None:
            if body is None:
                self._done(primary, fut)
                return
            entry = Entry(
                primary=primary,
                key=key,
                status=status,
                reason=up.reason if up is not None else "",
                headers=verdict.headers,
                body=body,
                cc=verdict.cc,
                lifetime=verdict.lifetime,
                stored_at=received,
                age0=upstream_age(verdict.headers),
                tags=verdict.tags,
                vary=verdict.vary,
            )
            store.put(entry, stored)

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
            fresh = reply.headers
            if self._tags_header is not None:
                fresh.popall(self._tags_header, None)  # tags are set when the body is stored
            headers = merge_304(entry.headers, fresh)
            cc = parse_cache_control(v for k, v in headers if k.lower() == "cache-control")
            lifetime = freshness_lifetime(entry.status, headers, cc, self._default_ttl)
            entry.set_headers(headers, cc, lifetime, now, upstream_age(headers))
            self._store.refreshed(entry)
            self._done(primary, fut)
            self.counts["revalidated"] += 1
            return answer(ex, entry, now, "fwd=stale; fwd-status=304")
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
        return answer(ex, entry, now, f"fwd=stale; fwd-status={status}; detail=stale-if-error")

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
        self._refresh_keys.add(primary)
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
            self._refresh_keys.discard(primary)
            if claimed is not None and not claimed.done():
                claimed.set_result(None)

    def __repr__(self) -> str:
        return (
            f"<CacheFilter route={self.route} max_entry={self._limit} "
            f"inflight={len(self._inflight)} counts={self.counts} store={self._store!r}>"
        )


# Filters that run inside the cache (after it in FILTER_ORDER): a hit never reaches them.
_INSIDE_CACHE = frozenset(FILTER_ORDER[FILTER_ORDER.index("cache") + 1 :])


def fast_path_filter(filters: Mapping[str, Filter]) -> CacheFilter | None:
    """The route's CacheFilter when nothing runs before it (set on Route.cache_fast at
    load, gateway/runtime.py): then a hit's answer depends on the request and the
    entry alone, and server.py may answer it without building an Exchange. Any filter
    before the cache (auth, rate limits, bans, CORS, headers, size, screening,
    overload, or one added to FILTER_ORDER later) could refuse or change the answer:
    None, every request takes the chain."""
    cache = filters.get("cache")
    if not isinstance(cache, CacheFilter):
        return None
    if any(name != "cache" and name not in _INSIDE_CACHE for name in filters):
        return None
    return cache
