"""ScreeningFilter: a route's pattern screen, built once at config load.

Per request: the path, every query parameter (name and value), the configured header
values and the cookies are scanned (matcher.py); if that alone blocks, the body is not
read. Otherwise, with `inspect_body_bytes` > 0 and a body present, up to that many
bytes are read into memory and their values scanned: JSON string values (and keys)
with their path as the location (`body:$.items[2].name`), form fields by name
(`body:comment`), text bodies whole (`body`). The upstream then gets a body that
replays what was read and continues with the rest of the stream (`ReplayBody`); a body
read to its end becomes a `BytesBody`, which the pool can resend on a stale
keep-alive connection.

A body cut at the inspection size cannot be parsed whole: for JSON its complete string
literals are scanned (a truncated last one is dropped), for a form its complete fields.
A complete body that does not parse as its Content-Type scores 200002 (critical), as
CRS's REQBODY_ERROR does. Binary and multipart bodies are not inspected (known gap:
multipart form fields).

Verdict (scoring.py): `block` answers 403 with the request id and never the payload;
`shadow` logs the same line and lets the request pass. A block sets
`ex.state["blocked_by"]`, which the ban filter counts (shadow verdicts do not count).
Counters on the object (`counters`) until the metrics issue exports them.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from typing import Any
from urllib.parse import unquote

import orjson

from gateway.body import BodySource, BytesBody
from gateway.config.screening_model import Screening
from gateway.exchange import Exchange, Reply
from gateway.filters.screening.matcher import Hit, Matcher, compile_rules
from gateway.filters.screening.scoring import Exclusions, Verdict, score
from gateway.pipeline import Next

__all__ = ["ReplayBody", "ScreeningCounters", "ScreeningFilter"]

log = logging.getLogger("gateway.screening")

_NEVER_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNSAFE = re.compile(r"[^\x21-\x7e]")
_MAX_NAME = 64


def _safe(name: str) -> str:
    """A client-chosen name as it may appear in a log line: printable, short."""
    if len(name) > _MAX_NAME:
        name = name[:_MAX_NAME] + "..."
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", name)


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

    __slots__ = ("blocked", "bodies_truncated", "excluded", "inspected", "rules", "shadow")

    def __init__(self) -> None:
        self.inspected = 0  # requests scanned
        self.blocked = 0  # requests answered 403
        self.shadow = 0  # requests that would have been blocked, passed in shadow mode
        self.excluded = 0  # hits turned off by an exclusion
        self.bodies_truncated = 0  # bodies larger than inspect_body_bytes
        self.rules: Counter[int] = Counter()  # rule id -> requests it counted in

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
        self.counters = ScreeningCounters()

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        self.counters.inspected += 1
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
        m = self.matcher
        m.scan(ex.path, "path", "path", hits)
        if ex.query:
            self._scan_pairs(ex.query, "query", "query:", hits)
        h = ex.headers
        if self._all_headers:
            for name, value in h.items():
                if name.lower() not in _NEVER_HEADERS:
                    m.scan(value, "header", f"header:{_safe(name)}", hits)
        else:
            for name, location in self._headers:
                for value in h.getall(name, ()):
                    m.scan(value, "header", location, hits)
        if self._cookies:
            for header in h.getall("Cookie", ()):
                for part in header.split(";"):
                    name, _, value = part.strip().partition("=")
                    if value:
                        m.scan(value, "cookie", f"cookie:{_safe(name)}", hits)

    def _scan_pairs(self, text: str, kind: str, prefix: str, hits: list[Hit]) -> None:
        """`a=1&b=2` (query or form): names and values, still percent-encoded."""
        m = self.matcher
        for piece in text.split("&"):
            if not piece:
                continue
            name, _, value = piece.partition("=")
            if "+" in piece:
                name, value = name.replace("+", " "), value.replace("+", " ")
            location = prefix + _safe(_plain_name(name))
            m.scan(name, kind, location, hits)
            if value:
                m.scan(value, kind, location, hits)

    # -- the body ------------------------------------------------------------------------

    async def _scan_body(self, ex: Exchange, hits: list[Hit]) -> None:
        data, complete = await self._read_prefix(ex)
        if not data:
            return
        media = ex.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            self._scan_json(data, complete, hits)
        elif media == "application/x-www-form-urlencoded":
            text = data.decode("latin-1")
            if not complete:
                text = text.rpartition("&")[0]
            self._scan_pairs(text, "body", "body:", hits)
        elif media.startswith("text/") or media in ("application/xml", "application/graphql"):
            self.matcher.scan(data.decode("utf-8", "replace"), "body", "body", hits)
        elif not media:
            if data.lstrip()[:1] in (b"{", b"["):
                self._scan_json(data, complete, hits)
            else:
                self.matcher.scan(data.decode("utf-8", "replace"), "body", "body", hits)

    async def _read_prefix(self, ex: Exchange) -> tuple[bytes, bool]:
        """Up to inspect_body_bytes of the body, and whether that was all of it.

        Replaces `ex.body` with a source that gives the upstream every byte."""
        body = ex.body
        assert body is not None
        limit = self._body_bytes
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
        data = b"".join(chunks)
        if complete:
            ex.body = BytesBody(data)
        else:
            self.counters.bodies_truncated += 1
            ex.body = ReplayBody(data, body)
        return data[:limit], complete

    def _scan_json(self, data: bytes, complete: bool, hits: list[Hit]) -> None:
        m = self.matcher
        if complete:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                m.flag(200002, "body", "body", hits)
                m.scan(data.decode("utf-8", "replace"), "body", "body", hits)
                return
            _walk(m, doc, "body:$", hits)
            return
        # Truncated: each complete string literal, decoded as JSON would.
        for lit in _JSON_STRING.finditer(data.decode("utf-8", "replace")):
            raw = lit.group(1)
            if "\\" in raw:
                with contextlib.suppress(orjson.JSONDecodeError):
                    raw = orjson.loads(f'"{raw}"')
            m.scan(raw, "body", "body", hits)

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


def _plain_name(name: str) -> str:
    return unquote(name) if "%" in name else name


def _walk(m: Matcher, node: Any, path: str, hits: list[Hit]) -> None:
    """Scan every string in a parsed JSON document (keys too), located by JSON path."""
    if isinstance(node, str):
        m.scan(node, "body", path, hits)
    elif isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{_safe(key)}"
            m.scan(key, "body", sub, hits)
            if isinstance(value, str | dict | list):
                _walk(m, value, sub, hits)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, str | dict | list):
                _walk(m, value, f"{path}[{i}]", hits)
