"""DedupFilter: process each idempotency key once per window; repeats get the stored answer.

It runs after the request was judged acceptable (FILTER_ORDER: after rate limits and
screening, before the cache). Per request whose method the route deduplicates:

1. The key: the configured header's value, or the value at a JSON body path (a
   webhook's message id). No key (header absent, body not JSON, path not there):
   the request passes through, counted as `passed`.
2. The body is read whole (up to max_request_bytes, else 413) and put back as an
   in-memory body; the request's fingerprint is SHA-256 over method, target and
   body. The store key is `<redis key_prefix>dedup:<route>:<SHA-256 of the key>`
   (the client's key is hashed: bounded length, nothing of it stored in clear).
3. `claim` (gateway/store/dedup.py):
   - CLAIMED: this request is the first. It goes on; a response with a status other
     than 5xx, 408, 425 or 429 is stored: a body in memory at once, a streamed body
     teed chunk by chunk as the client reads it (TeeStream, as the cache does) and
     stored at its end if it stayed within max_body_bytes. Anything else (too
     large, transient status, a failure, a client gone mid-body) releases the key,
     so a retry is processed again.
   - DONE with the same fingerprint: the stored response, with `<header>: true`
     (`replayed`).
   - PENDING or DONE with another fingerprint: 422 (`mismatch`): the same key was
     used for a different request.
   - PENDING with the same fingerprint: `conflict` answers 409 at once; `wait`
     waits for the first to finish (at most the route's total timeout, else 60 s;
     409 after that), then claims again: it gets the stored answer, or becomes the
     first itself when the first released the key.
4. The store failed (Redis down, slow, breaker open): `open` lets the request pass
   undeduplicated (`unavailable`), `closed` answers 503.

The lease of a claim is the route's total timeout plus LEASE_MARGIN_S (the window
when the timeout is unlimited), so a gateway that dies mid-request frees its keys.
Outcomes are counted per route in plain ints (`COUNTS`), flushed to the
`gateway_dedup` counter with the other metrics.

The filter runs inside compression (FILTER_ORDER), so it stores the upstream's own
bytes and each replay is encoded for the client asking.

Known gap: a client gone mid-body after the upstream processed the request releases
the key (the repeat is processed again).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import orjson
from multidict import CIMultiDict, istr

from gateway.body import BytesBody, MemoryResponse
from gateway.config.overload_model import Dedup
from gateway.exchange import Exchange, Reply
from gateway.filters.cache import TeeStream
from gateway.observability.metrics import FLUSH_HOOKS, metrics
from gateway.pipeline import Next
from gateway.store.dedup import (
    CLAIMED,
    DONE,
    DedupStore,
    DedupStores,
    DedupUnavailable,
    Stored,
)

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from gateway.upstream import UpstreamResponse

__all__ = ["COUNTS", "OUTCOMES", "DedupFilter", "json_value"]

log = logging.getLogger("gateway.dedup")

OUTCOMES = (
    "stored",
    "replayed",
    "conflict",
    "mismatch",
    "waited",
    "passed",
    "not_stored",
    "unavailable",
    "too_large",
)
# (route, outcome) -> count not yet handed to prometheus-client.
COUNTS: dict[tuple[str, str], int] = {}

LEASE_MARGIN_S = 5.0
DEFAULT_WAIT_S = 60.0
CHUNK_BYTES = 64 * 1024
TRANSIENT = frozenset({408, 425, 429})
LOG_EVERY_S = 10.0  # store failures: one log line per route per this many seconds

# Framing is re-made per response; the rest is the answer as the upstream gave it.
_UNSTORED = frozenset({"content-length", "transfer-encoding"})


def json_value(body: bytes, steps: tuple[str | int, ...]) -> str | None:
    """The value at `steps` in a JSON body, as text; None when there is none."""
    try:
        node: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
        elif not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    if node is None:
        return None
    if isinstance(node, str):
        return node or None
    return orjson.dumps(node, option=orjson.OPT_SORT_KEYS).decode()


class DedupFilter:
    """A route's dedup settings, compiled at load; the keys live in the store."""

    __slots__ = (
        "_counts",
        "_json",
        "_log_at",
        "_prefix",
        "header",
        "lease_s",
        "max_body_bytes",
        "max_request_bytes",
        "methods",
        "on_conflict",
        "open",
        "replay_header",
        "route",
        "store",
        "wait_s",
        "window_s",
    )

    def __init__(
        self, cfg: Dedup, stores: DedupStores, *, route: str, total_timeout_s: float
    ) -> None:
        self.route = route
        self.store: DedupStore = stores.store
        self._prefix = f"{stores.key_prefix}dedup:{route}:"
        self.header = istr(cfg.key.header) if cfg.key.header is not None else None
        self._json = cfg.json_steps
        self.methods = frozenset(cfg.methods)
        self.window_s = cfg.window
        self.max_body_bytes = cfg.max_body_bytes
        self.max_request_bytes = cfg.max_request_bytes
        self.on_conflict = cfg.on_in_flight == "conflict"
        self.open = cfg.on_store_error == "open"
        self.replay_header = cfg.header
        self.wait_s = total_timeout_s if total_timeout_s > 0 else DEFAULT_WAIT_S
        self.lease_s = total_timeout_s + LEASE_MARGIN_S if total_timeout_s > 0 else cfg.window
        for outcome in OUTCOMES:
            COUNTS.setdefault((route, outcome), 0)
        self._counts = {o: (route, o) for o in OUTCOMES}
        self._log_at = 0.0  # monotonic time before which store failures are not logged

    def _count(self, outcome: str) -> None:
        key = self._counts[outcome]
        COUNTS[key] = COUNTS.get(key, 0) + 1

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        if ex.method not in self.methods:
            return await next(ex)
        value = None
        if self.header is not None:
            value = ex.headers.get(self.header)
            if not value:
                self._count("passed")
                return await next(ex)
        body = await self._read_body(ex)
        if body is None:
            self._count("too_large")
            log.info(
                "413 on route %s: body over %d bytes (id=%s)",
                self.route,
                self.max_request_bytes,
                ex.request_id,
            )
            return Reply.error(
                413,
                "payload_too_large",
                f"a deduplicated request body may have at most {self.max_request_bytes} bytes",
                ex.request_id,
            )
        if self._json is not None:
            value = json_value(body, self._json)
            if value is None:
                self._count("passed")
                return await next(ex)
        assert value is not None
        fingerprint = _fingerprint(ex, body)
        key = self._prefix + hashlib.sha256(value.encode()).hexdigest()
        return await self._dedup(ex, next, key, fingerprint)

    async def _dedup(self, ex: Exchange, next: Next, key: str, fingerprint: str) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        waited = False
        while True:
            try:
                claim = await self.store.claim(key, fingerprint, self.lease_s)
            except DedupUnavailable as e:
                return await self._unavailable(ex, next, e)
            if claim.kind == CLAIMED:
                return await self._first(ex, next, key, claim.token)
            if claim.fingerprint != fingerprint:
                self._count("mismatch")
                log.info(
                    "422 on route %s: idempotency key reused for another request (id=%s)",
                    self.route,
                    ex.request_id,
                )
                return Reply.error(
                    422,
                    "idempotency_key_mismatch",
                    "this idempotency key was used for a different request",
                    ex.request_id,
                )
            if claim.kind == DONE:
                assert claim.stored is not None
                self._count("replayed")
                return self._replay(claim.stored)
            left = deadline - loop.time()
            if self.on_conflict or left <= 0:
                self._count("conflict")
                return Reply.error(
                    409,
                    "idempotency_key_in_use",
                    "a request with this idempotency key is still being processed",
                    ex.request_id,
                )
            if not waited:
                waited = True
                self._count("waited")
            try:
                await self.store.wait(key, left)
            except DedupUnavailable as e:
                return await self._unavailable(ex, next, e)

    async def _unavailable(self, ex: Exchange, next: Next, err: Exception) -> Reply:
        self._count("unavailable")
        now = time.monotonic()  # log at most once per LOG_EVERY_S: an outage is not a flood
        if now >= self._log_at:
            self._log_at = now + LOG_EVERY_S
            log.warning(
                "dedup store unavailable on route %s (id=%s, %d request(s) so far): %s",
                self.route,
                ex.request_id,
                COUNTS.get(self._counts["unavailable"], 0),
                err,
            )
        if self.open:
            return await next(ex)
        reply = Reply.error(
            503, "dedup_unavailable", "the deduplication store is unavailable", ex.request_id
        )
        reply.headers["Retry-After"] = "1"
        return reply

    async def _read_body(self, ex: Exchange) -> bytes | None:
        """The whole request body (put back as an in-memory body); None if too large."""
        src = ex.body
        if src is None:
            return b""
        limit = self.max_request_bytes
        if ex.content_length is not None and ex.content_length > limit:
            return None
        parts = []
        size = 0
        while chunk := await src.read():
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
        data = b"".join(parts)
        ex.body = BytesBody(data)
        ex.content_length = len(data)
        return data

    async def _first(self, ex: Exchange, next: Next, key: str, token: str) -> Reply:
        store = self.store
        try:
            reply = await next(ex)
        except BaseException:
            store.release_soon(key, token)
            raise
        status = reply.status
        up = reply.stream
        if (
            status >= 500
            or status in TRANSIENT
            or (
                up is not None
                and up.content_length is not None
                and up.content_length > self.max_body_bytes
            )
        ):
            self._count("not_stored")
            store.release_soon(key, token)
            return reply
        headers = [(k, v) for k, v in reply.headers.items() if k.lower() not in _UNSTORED]
        if up is None or status in (204, 304) or ex.method == "HEAD" or up.content_length == 0:
            body = reply.body if up is None else b""
            if len(body) > self.max_body_bytes:
                self._count("not_stored")
                store.release_soon(key, token)
            else:
                self._count("stored")
                reason = up.reason if up is not None else _phrase(status)
                store.complete_soon(
                    key, token, Stored(status, reason, headers, body), self.window_s
                )
            return reply
        reason = up.reason

        def on_end(body: bytes | None) -> None:
            if body is None:
                self._count("not_stored")
                store.release_soon(key, token)
            else:
                self._count("stored")
                store.complete_soon(
                    key, token, Stored(status, reason, headers, body), self.window_s
                )

        reply.stream = cast("UpstreamResponse", TeeStream(up, self.max_body_bytes, on_end))
        return reply

    def _replay(self, stored: Stored) -> Reply:
        h: CIMultiDict[str] = CIMultiDict(stored.headers)
        h[self.replay_header] = "true"
        stream = MemoryResponse(stored.status, stored.reason, stored.body, CHUNK_BYTES)
        return Reply(stored.status, h, stream=cast("UpstreamResponse", stream))

    def __repr__(self) -> str:
        src = f"header {self.header}" if self.header is not None else f"json {self._json}"
        return f"<DedupFilter route={self.route} key={src} window={self.window_s}s {self.store!r}>"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _fingerprint(ex: Exchange, body: bytes) -> str:
    h = hashlib.sha256(ex.method.encode())
    h.update(b"\x00")
    h.update(ex.target.encode())
    h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


def flush_metrics(runtime: Runtime) -> None:
    """FLUSH_HOOKS: dedup outcomes by route."""
    counter = metrics().dedup
    for key, n in COUNTS.items():
        if n:
            counter.labels(*key).inc(n)
            COUNTS[key] = 0


FLUSH_HOOKS.append(flush_metrics)
