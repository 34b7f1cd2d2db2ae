"""One HTTP/1.1 exchange over an UpstreamConnection: request framing and the response.

Request side
------------
The headers handed in are final (the proxy core removed hop-by-hop fields and set
Host); this module adds only the framing (RFC 9112 §6): `Content-Length: n` when the
length is known, `Transfer-Encoding: chunked` for a streamed body of unknown length,
nothing when there is no body. The head is one str join and one encode, written
together with the first body chunk in one `transport.write` when that chunk is small:
a typical proxied request costs one syscall.

Text is encoded as UTF-8 with `surrogateescape`, the inverse of how aiohttp's server
decodes request heads, so header bytes pass through exactly; the head must not contain
CR or LF inside a field (checked by counting line breaks, one C-level scan).

A streamed body is sent chunk by chunk, waiting for the transport to drain (so a slow
upstream slows the client down, never fills memory). The response is awaited only once
the request is sent, except that sending stops as soon as a response head arrives or
the upstream closes (an early 413 or 401): the connection is then not reused.

Response side
-------------
`UpstreamResponse` is a thin view over the connection: `read()` hands out queued body
chunks and enforces the read timeout (silence) and the deadline (whole exchange). Once
the last chunk is handed out, the connection goes back to the pool by itself, so
`release()` is usually a no-op; it stays safe to call any number of times.

Known gap: while waiting on the client's body source the upstream's early answer is
noticed only when the next chunk arrives (a task per chunk to race them costs more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.body import BodySource
from gateway.errors import BadRequest, UpstreamClosed, UpstreamResponseTooLarge, UpstreamTimeout
from gateway.upstream.connection import UpstreamConnection

Release = Callable[[UpstreamConnection, bool], None]

SMALL_WRITE = 64 * 1024
"""A head and a body chunk below this size together are joined into one write."""

_CHUNKED = "Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"


class StaleConnection(Exception):
    """A reused keep-alive connection failed before any response byte and nothing of
    the body was consumed: the pool retries once on a new connection."""


def framing_for(content_length: int | None, streamed: bool) -> str:
    if content_length is not None:
        return f"Content-Length: {content_length}\r\n"
    return _CHUNKED if streamed else ""


def encode_head(method: str, target: str, headers: list[tuple[str, str]], framing: str) -> bytes:
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    text = "".join((method, " ", target, " HTTP/1.1\r\n", *lines, framing, "\r\n"))
    # Each line ends in exactly one CRLF; any other CR or LF would split the request.
    breaks = len(lines) + 2 + framing.count("\n")
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise BadRequest("CR or LF inside a request line or header field")
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise BadRequest("request head is not encodable") from None


def _frame(chunk: bytes) -> list[bytes]:
    return [b"%x\r\n" % len(chunk), chunk, _CRLF]


async def _pull(source: BodySource, deadline: float | None) -> bytes:
    if deadline is None:
        return await source.read()
    try:
        async with asyncio.timeout_at(deadline):
            return await source.read()
    except TimeoutError:
        raise UpstreamTimeout("deadline exceeded reading the request body") from None


async def _send_stream(
    conn: UpstreamConnection,
    head: bytes,
    source: BodySource,
    content_length: int | None,
    read_timeout_s: float,
    deadline: float | None,
) -> None:
    chunked = content_length is None
    limit = -1 if content_length is None else content_length
    chunk = await _pull(source, deadline)
    sent = len(chunk)
    if sent > limit >= 0:
        raise BadRequest("request body longer than its Content-Length")
    if not chunk:
        conn.write(head + _LAST_CHUNK if chunked else head)
    else:
        parts = [head, *_frame(chunk)] if chunked else [head, chunk]
        if sent < SMALL_WRITE:
            conn.write(b"".join(parts))
        else:
            conn.writelines(parts)
    while chunk:
        if conn.write_paused:
            await conn.drain(read_timeout_s, deadline)
        if conn.head_done or conn.closed:
            return  # answered (or closed) early: stop sending, not reusable
        chunk = await _pull(source, deadline)
        if conn.head_done or conn.closed:
            return
        if not chunk:
            break
        sent += len(chunk)
        if chunked:
            conn.writelines(_frame(chunk))
        elif sent > limit:
            raise BadRequest("request body longer than its Content-Length")
        else:
            conn.write(chunk)
    if chunked:
        if sent:
            conn.write(_LAST_CHUNK)
    elif sent < limit:
        raise BadRequest("request body shorter than its Content-Length")
    conn.request_sent()


async def exchange(
    conn: UpstreamConnection,
    release: Release,
    *,
    head: bytes,
    is_head: bool,
    data: bytes | None,
    source: BodySource | None,
    content_length: int | None,
    read_timeout_s: float,
    deadline: float | None,
    may_retry: bool,
) -> UpstreamResponse:
    """Send one request on `conn` and wait for the response head.

    `data` is a body already in memory (replayable), `source` a streamed one (not
    replayable once a byte was pulled, and one always is before the head is sent).
    Raises StaleConnection instead of UpstreamClosed when `may_retry` allows a replay.
    """
    conn.begin(is_head)
    try:
        if source is not None:
            await _send_stream(conn, head, source, content_length, read_timeout_s, deadline)
        else:
            if not data:
                conn.write(head)
            elif len(data) < SMALL_WRITE:
                conn.write(head + data)
            else:
                conn.writelines([head, data])
            conn.request_sent()
        await conn.wait_head(read_timeout_s, deadline)
    except UpstreamClosed as e:
        if may_retry and source is None and e.before_response:
            raise StaleConnection from e
        raise
    return UpstreamResponse(conn, release, read_timeout_s, deadline)


class UpstreamResponse:
    """An upstream response whose body is read chunk by chunk.

    `headers` are as received, in order, latin-1 decoded, duplicates kept. For a 101
    (`is_upgrade`) the connection has left the pool: `read()` returns the raw bytes that
    follow the head (no timeouts: a WebSocket may idle), `write()` + `drain()` send raw
    bytes, and `release()`/`abort()` close it.
    """

    __slots__ = (
        "_conn",
        "_deadline",
        "_ended",
        "_left_bytes",
        "_on_done",
        "_read_timeout_s",
        "_release",
        "chunked",
        "content_length",
        "headers",
        "is_upgrade",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(
        self,
        conn: UpstreamConnection,
        release: Release,
        read_timeout_s: float,
        deadline: float | None,
    ) -> None:
        self.status = conn.status
        self.reason = conn.reason.decode("latin-1")
        self.headers = conn.headers
        self.content_length = conn.content_length
        self.chunked = conn.chunked
        self.keep_alive = conn.keep_alive
        self.is_upgrade = conn.upgraded
        self._conn: UpstreamConnection | None = conn
        self._release = release
        self._read_timeout_s: float | None = None if conn.upgraded else read_timeout_s
        self._deadline = None if conn.upgraded else deadline
        self._ended = False
        self._left_bytes = -1  # body bytes still allowed (limit_body); -1: no limit
        self._on_done: Callable[[], None] | None = None
        if conn.complete and not conn.has_queued:
            self._end(conn)  # no body (HEAD, 204, 304, Content-Length: 0)

    @property
    def connection(self) -> UpstreamConnection | None:
        """The connection while the response holds it (state for tests and metrics)."""
        return self._conn

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end. Raises UpstreamTimeout, UpstreamClosed
        (truncated body) or UpstreamProtocolError; the connection is closed then."""
        conn = self._conn
        if conn is None:
            if self._ended:
                return b""
            raise UpstreamClosed("response released before its end")
        try:
            chunk = await conn.read_chunk(self._read_timeout_s, self._deadline)
        except BaseException:
            self.abort()
            raise
        if self._left_bytes >= 0:
            self._left_bytes -= len(chunk)
            if self._left_bytes < 0:
                self.abort()
                raise UpstreamResponseTooLarge("upstream response body over the route's limit")
        if not chunk or (conn.complete and not conn.has_queued):
            self._end(conn)
        return chunk

    async def read_all(self) -> bytes:
        conn = self._conn
        if conn is not None and conn.complete:  # all of it arrived with the head
            if 0 <= self._left_bytes < conn.buffered:
                self.abort()
                raise UpstreamResponseTooLarge("upstream response body over the route's limit")
            data = conn.take_all()
            self._end(conn)
            return data
        chunks = []
        while chunk := await self.read():
            chunks.append(chunk)
        return b"".join(chunks)

    def limit_body(self, max_bytes: int) -> None:
        """Fail `read()` with UpstreamResponseTooLarge (and close the connection) once
        more than `max_bytes` of body arrived: for bodies without a Content-Length."""
        self._left_bytes = max_bytes

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the response ends (read to its end, released or
        aborted); at once if it already has. The bulkhead frees its slot this way."""
        if self._conn is None:
            callback()
        else:
            self._on_done = callback

    def set_deadline(self, deadline: float | None) -> None:
        """Replace the deadline for reading the body (a per-try timeout covered only
        the wait for the head)."""
        if not self.is_upgrade:
            self._deadline = deadline

    def _done(self) -> None:
        callback = self._on_done
        if callback is not None:
            self._on_done = None
            callback()

    def release(self) -> None:
        """Give the connection back: to the pool if the response is complete and
        keep-alive holds, else closed. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._release(conn, conn.reusable)
            self._done()

    def abort(self) -> None:
        """Close the connection now (the client went away mid-stream). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
            self._release(conn, False)
            self._done()

    def write(self, data: bytes) -> None:
        """Send raw bytes on an upgraded connection."""
        if not self.is_upgrade:
            raise RuntimeError("write() is only for upgraded (101) connections")
        if self._conn is None:
            raise UpstreamClosed("upgraded connection already closed")
        self._conn.write(data)

    async def drain(self) -> None:
        """Wait until the upgraded connection takes more data (backpressure)."""
        if self._conn is not None:
            await self._conn.drain(None, None)

    def _end(self, conn: UpstreamConnection) -> None:
        self._ended = True
        self._conn = None
        self._release(conn, conn.reusable)
        self._done()

    def __repr__(self) -> str:
        state = "ended" if self._ended else "released" if self._conn is None else "open"
        return (
            f"<UpstreamResponse {self.status} {self.reason!r} {state} "
            f"content_length={self.content_length} chunked={self.chunked} "
            f"keep_alive={self.keep_alive} upgrade={self.is_upgrade} conn={self._conn!r}>"
        )
