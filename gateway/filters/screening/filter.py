"""ScreeningFilter: a route's pattern screen, built once at config load.

Per request: the path, every query parameter (name and value), the configured header
values and the cookies are scanned together (matcher.scan_items: one prefilter pass
for the whole head; matcher.scan_head remembers the hits of heads seen before, by
their raw values); if that alone blocks, the body is not read. Otherwise, with
`inspect_body_bytes` > 0 and a body present, up to that many bytes are read into
memory and their values scanned (body.py: JSON strings by JSON path, form and
multipart fields by name, text whole). The upstream then gets a body that replays
what was read and continues with the rest of the stream (`ReplayBody`); a body read
to its end becomes a `BytesBody`, which the pool can resend on a stale keep-alive
connection.

Verdict (scoring.py): `block` answers 403 with the request id and never the payload;
`shadow` logs the same line and lets the request pass. A block sets
`ex.state["blocked_by"]`, which the ban filter counts (shadow verdicts do not count).
Counters on the object (`counters`) until the metrics issue exports them.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter

from gateway.body import BodySource, BytesBody
from gateway.config.screening_model import Screening
from gateway.exchange import Exchange, Reply
from gateway.filters.screening.body import pairs, safe_name, scan_body
from gateway.filters.screening.matcher import Hit, Item, Matcher, compile_rules
from gateway.filters.screening.rules import RULES_BY_ID
from gateway.filters.screening.scoring import Exclusions, Verdict, score
from gateway.pipeline import Next

__all__ = ["ReplayBody", "ScreeningCounters", "ScreeningFilter"]

log = logging.getLogger("gateway.screening")

_NEVER_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})


@functools.lru_cache(maxsize=1024)  # header names repeat from request to request
def _header_location(name: str) -> str | None:
    """'header:<name>' for a header that is inspected, None for one that never is."""
    return None if name.lower() in _NEVER_HEADERS else f"header:{safe_name(name)}"


@functools.lru_cache(maxsize=256)  # content types repeat too
def _media(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


@functools.lru_cache(maxsize=1024)
def _cookie_location(name: str) -> str:
    return f"cookie:{safe_name(name)}"


class ReplayBody:
    """What was read for inspection, then the rest of the original stream."""

    __slots__ = ("_prefix", "_rest")

    def __init__(self, prefix: bytes, rest: BodySource) -> None:
        self._prefix = prefix
        self._rest = rest

    async def read(self) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return await self._rest.read()

    def __repr__(self) -> str:
        return f"<ReplayBody {len(self._prefix)} bytes buffered, then {self._rest!r}>"


class ScreeningCounters:
    """What one route's screen saw; read by tests, logs and (later) metrics."""

    __slots__ = (
        "blocked",
        "blocks",
        "bodies_truncated",
        "excluded",
        "inspected",
        "rules",
        "shadow",
    )

    def __init__(self) -> None:
        self.inspected = 0  # requests scanned
        self.blocked = 0  # requests answered 403
        self.shadow = 0  # requests that would have been blocked, passed in shadow mode
        self.excluded = 0  # hits turned off by an exclusion
        self.bodies_truncated = 0  # bodies larger than inspect_body_bytes
        self.rules: Counter[int] = Counter()  # rule id -> requests it counted in
        # (category, "blocked" | "shadow") -> blocks with a hit of that category
        self.blocks: Counter[tuple[str, str]] = Counter()

    def __repr__(self) -> str:
        return (
            f"<ScreeningCounters inspected={self.inspected} blocked={self.blocked} "
            f"shadow={self.shadow} excluded={self.excluded} "
            f"truncated={self.bodies_truncated} rules={dict(self.rules)}>"
        )


class ScreeningFilter:
    """A route's screen: compiled rules (shared), exclusions, mode, threshold."""

    __slots__ = (
        "_all_headers",
        "_body_bytes",
        "_cookies",
        "_headers",
        "_layout",
        "counters",
        "exclusions",
        "matcher",
        "mode",
        "route",
        "threshold",
    )

    def __init__(self, cfg: Screening, *, route: str) -> None:
        self.route = route
        self.mode = cfg.mode
        self.threshold = cfg.threshold
        self.matcher: Matcher = compile_rules(cfg.categories)
        self.exclusions = Exclusions(cfg.exclusions)
        self._body_bytes = cfg.inspect_body_bytes
        self._all_headers = cfg.headers == ["*"]
        self._headers = tuple((h, f"header:{h}") for h in cfg.headers if h != "*")
        self._cookies = cfg.cookies
        # How a head's items are made from its raw values, in the matcher's head cache
        # key (routes sharing a matcher may inspect other headers); a str: its hash is
        # computed once.
        self._layout = repr((self._all_headers, self._headers, self._cookies))
        self.counters = ScreeningCounters()

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        self.counters.inspected += 1
        ex.state["screening_outcome"] = "passed"  # for the access log; _decide may change it
        hits: list[Hit] = []
        self.scan_head(ex, hits)
        verdict = score(hits, self.exclusions, ex.path) if hits else None
        head_blocks = verdict is not None and verdict.score >= self.threshold
        if not head_blocks and ex.body is not None and self._body_bytes > 0:
            await self._scan_body(ex, hits)
            if hits:
                verdict = score(hits, self.exclusions, ex.path)
        if verdict is not None:
            ex.state["screening"] = verdict  # for the access log (and the harness)
            reply = self._decide(ex, verdict)
            if reply is not None:
                return reply
        return await next(ex)

    # -- the head ------------------------------------------------------------------------

    def scan_head(self, ex: Exchange, hits: list[Hit]) -> None:
        h = ex.headers
        values: tuple[object, ...]
        if self._all_headers:  # (not the headers never inspected: no token in the key)
            values = tuple([kv for kv in h.items() if _header_location(kv[0]) is not None])
        else:
            values = tuple([tuple(h.getall(name, ())) for name, _ in self._headers])
        cookies = tuple(h.getall("Cookie", ())) if self._cookies else ()
        key = (self._layout, ex.path, ex.query, values, cookies)
        self.matcher.scan_head(key, functools.partial(self._head_items, ex), hits)

    def _head_items(self, ex: Exchange) -> list[Item]:
        items: list[Item] = [(ex.path, "path", "path")]
        if ex.query:
            items += pairs(ex.query, "query", "query:")
        h = ex.headers
        if self._all_headers:
            for name, value in h.items():
                location = _header_location(name)
                if location is not None:
                    items.append((value, "header", location))
        else:
            for name, location in self._headers:
                for value in h.getall(name, ()):
                    items.append((value, "header", location))
        if self._cookies:
            for header in h.getall("Cookie", ()):
                for part in header.split(";"):
                    name, _, value = part.strip().partition("=")
                    if value:
                        items.append((value, "cookie", _cookie_location(name)))
        return items

    # -- the body ------------------------------------------------------------------------

    async def _scan_body(self, ex: Exchange, hits: list[Hit]) -> None:
        """Scan up to inspect_body_bytes of the body. Replaces `ex.body` with a source
        that gives the upstream every byte: a BytesBody when all of it was read, else a
        ReplayBody. (One coroutine: each level of await costs ~0.5 us.)"""
        body = ex.body
        assert body is not None
        limit = self._body_bytes
        # With a Content-Length, its last byte is the end: below the limit, where the
        # next read would only say b"", it is not made (aiohttp hands out no more).
        length = ex.content_length
        chunks: list[bytes] = []
        n = 0
        complete = False
        while n < limit:
            chunk = await body.read()
            if not chunk:
                complete = True
                break
            chunks.append(chunk)
            n += len(chunk)
            if n == length and n < limit:
                complete = True
                break
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if complete:
            ex.body = BytesBody(data)
        else:
            self.counters.bodies_truncated += 1
            ex.body = ReplayBody(data, body)
            data = data[:limit]
        if data:
            content_type = ex.headers.get("Content-Type", "")
            scan_body(self.matcher, _media(content_type), content_type, data, complete, hits)

    # -- the verdict ---------------------------------------------------------------------

    def _decide(self, ex: Exchange, verdict: Verdict) -> Reply | None:
        c = self.counters
        c.excluded += len(verdict.excluded)
        for rule_id in {rule for rule, _ in verdict.hits}:
            c.rules[rule_id] += 1
        if verdict.score < self.threshold:
            if verdict.hits:
                log.debug(
                    "screening score %d below %d on route %s (id=%s): %s",
                    verdict.score,
                    self.threshold,
                    self.route,
                    ex.request_id,
                    verdict.describe(),
                )
            return None
        shadow = self.mode == "shadow"
        log.warning(
            "screening %s request on route %s (id=%s client=%s %s): score %d >= %d, rules %s",
            "would block (shadow)" if shadow else "blocked",
            self.route,
            ex.request_id,
            ex.client_ip,
            ex.method,
            verdict.score,
            self.threshold,
            verdict.describe(),
        )
        action = "shadow" if shadow else "blocked"
        ex.state["screening_outcome"] = action
        for category in {RULES_BY_ID[rule].category for rule, _ in verdict.hits}:
            c.blocks[(category, action)] += 1
        if shadow:
            c.shadow += 1
            return None
        c.blocked += 1
        ex.state["blocked_by"] = "screening"  # counted toward a ban (filters/bans.py)
        return Reply.error(403, "forbidden", "request blocked by screening", ex.request_id)

    def __repr__(self) -> str:
        headers = "*" if self._all_headers else [h for h, _ in self._headers]
        return (
            f"<ScreeningFilter route={self.route} mode={self.mode} threshold={self.threshold} "
            f"categories={list(self.matcher.categories)} body={self._body_bytes} "
            f"headers={headers} exclusions={len(self.exclusions.source)} {self.counters!r}>"
        )
