"""SizeFilter: a route's cheap rejections, before anything reads a body or asks Redis.

Checks, cheapest first, each answering with the gateway's JSON error and one log line:

- method not in `methods`: 405 with Allow (RFC 9110 15.5.6);
- request target (raw path, '?', raw query) over `max_url_bytes`: 414 (RFC 9110 15.5.15);
- more than `max_headers` headers, or their 'name: value\\r\\n' bytes over
  `max_header_bytes`: 431 (RFC 6585 5). Counted on `ex.headers` as this filter sees
  them, after the header filter's request edits (it runs first, FILTER_ORDER);
- a body whose media type (parameters ignored, case-insensitive, RFC 9110 8.3.1) is not
  in `content_types`, or a body without Content-Type: 415 (RFC 9110 15.5.16);
- Content-Length over `max_body_bytes`: 413 at once, the body never read;
- a streamed body (chunked, or one the client lies about) is wrapped in `LimitedBody`,
  which counts bytes as whoever reads them (the screen, the upstream pool) pulls them
  and raises `BodyTooLarge` (a GatewayError, 413) the moment the count crosses the
  limit. The chunk that crossed it is never handed on: the pool stops sending, discards
  the half-written upstream connection, and the server answers 413.

Server-wide limits (ServerLimits: request line, header field, header block) still apply
first, in the HTTP parser; these are per route and may only be stricter in effect.
"""

from __future__ import annotations

import logging
from collections import Counter

from gateway.body import BodySource
from gateway.config.screening_model import Limits
from gateway.errors import GatewayError
from gateway.exchange import Exchange, Reply
from gateway.pipeline import Next

__all__ = ["BodyTooLarge", "LimitedBody", "SizeFilter"]

log = logging.getLogger("gateway.screening")


class BodyTooLarge(GatewayError):
    """A streamed request body crossed the route's max_body_bytes."""

    status = 413
    code = "payload_too_large"


class LimitedBody:
    """A body source that fails with BodyTooLarge once more than `limit` bytes passed."""

    __slots__ = ("_counts", "_source", "limit", "seen")

    def __init__(self, source: BodySource, limit: int, counts: Counter[int]) -> None:
        self._source = source
        self._counts = counts
        self.limit = limit
        self.seen = 0

    async def read(self) -> bytes:
        chunk = await self._source.read()
        self.seen += len(chunk)
        if self.seen > self.limit:
            self._counts[413] += 1
            raise BodyTooLarge(f"request body over {self.limit} bytes")
        return chunk

    def __repr__(self) -> str:
        return f"<LimitedBody {self.seen}/{self.limit} bytes of {self._source!r}>"


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


class SizeFilter:
    """A route's limits, fixed at config load; `rejected` counts answers by status."""

    __slots__ = (
        "_allow",
        "_methods",
        "_types",
        "_wildcards",
        "limits",
        "rejected",
        "route",
    )

    def __init__(self, limits: Limits, *, route: str) -> None:
        self.route = route
        self.limits = limits
        self._methods = frozenset(limits.methods) or None
        self._allow = ", ".join(limits.methods)
        types = limits.content_types
        # None: any type; else exact media types and 'type/' prefixes from 'type/*'.
        self._types: frozenset[str] | None = None
        self._wildcards: tuple[str, ...] = ()
        if types and "*/*" not in types:
            self._types = frozenset(t for t in types if not t.endswith("/*"))
            self._wildcards = tuple(t[:-1] for t in types if t.endswith("/*"))
        self.rejected: Counter[int] = Counter()

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        lim = self.limits
        if self._methods is not None and ex.method not in self._methods:
            reply = self._reject(ex, 405, "method_not_allowed", "method not allowed")
            reply.headers["Allow"] = self._allow
            return reply
        url = len(ex.path) + (len(ex.query) + 1 if ex.query else 0)
        if url > lim.max_url_bytes:
            return self._reject(ex, 414, "uri_too_long", "request target too long", url)
        h = ex.headers
        if len(h) > lim.max_headers:
            return self._reject(
                ex, 431, "request_header_fields_too_large", "too many request headers", len(h)
            )
        size = sum(len(k) + len(v) + 4 for k, v in h.items())
        if size > lim.max_header_bytes:
            return self._reject(
                ex, 431, "request_header_fields_too_large", "request headers too large", size
            )
        has_body = ex.body is not None or bool(ex.content_length)
        if has_body and self._types is not None and not self._type_allowed(h.get("Content-Type")):
            return self._reject(ex, 415, "unsupported_media_type", "content type not allowed")
        if ex.content_length is not None and ex.content_length > lim.max_body_bytes:
            return self._reject(
                ex, 413, "payload_too_large", "request body too large", ex.content_length
            )
        if ex.body is not None:
            ex.body = LimitedBody(ex.body, lim.max_body_bytes, self.rejected)
        return await next(ex)

    def _type_allowed(self, value: str | None) -> bool:
        if not value:
            return False
        media = _media_type(value)
        assert self._types is not None
        return media in self._types or media.startswith(self._wildcards)

    def _reject(
        self, ex: Exchange, status: int, code: str, message: str, size: int | None = None
    ) -> Reply:
        self.rejected[status] += 1
        log.info(
            "%d %s on route %s (id=%s client=%s %s)%s",
            status,
            code,
            self.route,
            ex.request_id,
            ex.client_ip,
            ex.method,
            "" if size is None else f": {size} bytes",
        )
        return Reply.error(status, code, message, ex.request_id)

    def __repr__(self) -> str:
        lim = self.limits
        parts = [
            f"route={self.route}",
            f"max_body_bytes={lim.max_body_bytes}",
            f"max_url_bytes={lim.max_url_bytes}",
            f"max_header_bytes={lim.max_header_bytes}",
            f"max_headers={lim.max_headers}",
        ]
        if lim.methods:
            parts.append(f"methods={list(lim.methods)}")
        if lim.content_types:
            parts.append(f"content_types={list(lim.content_types)}")
        if self.rejected:
            parts.append(f"rejected={dict(self.rejected)}")
        return f"<SizeFilter {' '.join(parts)}>"
