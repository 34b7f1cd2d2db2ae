"""One upstream HTTP/1.1 connection: an asyncio Protocol fed to httptools' C parser.

How it works
------------
`UpstreamConnection` is the transport's protocol and, at the same time (through its
base class, parsing.py's `ResponseParsing`), the callback object of an
`httptools.HttpResponseParser` made fresh for every exchange (`begin()`): bytes go
from `data_received` straight into llhttp, whose callbacks fill in the head (status,
reason, headers) and queue body chunks. Coroutines never touch the socket;
they wait on a future that every event (bytes, EOF, drain, close) sets, then re-check
the state, so there is a single wake-up path and no lost wake-ups. There are two such
futures, one for the reader and one for `drain()`, because an upgraded connection is
pumped both ways at once (a task reading, another writing).

Invariants
----------
- Memory is bounded whatever the body size: once more than `HIGH_WATER` bytes are
  queued, reading from the socket pauses; it resumes when the consumer brings the queue
  to `LOW_WATER`. Since one `data_received` delivers at most one socket read (256 KiB on
  asyncio and uvloop), the queue never holds more than HIGH_WATER + one read.
- Framing rules (HEAD, 1xx, EOF-delimited bodies, 101) live in parsing.py.
- A connection is reusable only if the response completed, both sides kept keep-alive,
  the whole request was sent, and not one stray byte followed the response.
- 101 Switching Protocols takes the connection out of HTTP: the parser is dropped and
  every later byte (including those behind the head in the same read) is queued raw.
- Every fault is stored as a `gateway.errors` exception in `_exc` the moment it is
  seen (parser errors, resets, truncation) and raised by whoever waits next.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

from gateway.errors import (
    GatewayError,
    UpstreamClosed,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.upstream.parsing import ResponseParsing

HIGH_WATER = 256 * 1024
"""Queued response bytes above which reading from the socket pauses."""
LOW_WATER = 64 * 1024
"""Queued response bytes at or below which reading resumes."""


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class UpstreamConnection(ResponseParsing):
    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_drain_waiter",
        "_exc",
        "_loop",
        "_on_close",
        "_read_at",
        "_read_waiter",
        "_reading_paused",
        "_request_done",
        "_timer",
        "_timer_at",
        "_transport",
        "_write_paused",
        "exchanges",
        "idle_since",
        "peak_buffered",
        "pooled",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        # Called once when the connection is closed or lost; set by the pool once the
        # connection is established, so a failed connect is never counted twice.
        self._on_close: Callable[[UpstreamConnection], None] | None = None
        self._closed = False
        self._exc: GatewayError | None = None
        self._read_waiter: asyncio.Future[bool] | None = None
        self._read_at: float | None = None  # when the current read wait expires
        # One lazily re-armed timer per connection for read waits (as aiohttp's
        # keep-alive timer): a wait that ends before it fires costs no timer at all.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._drain_waiter: asyncio.Future[bool] | None = None
        self._write_paused = False
        self._reading_paused = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._request_done = True
        self.exchanges = 0
        self.idle_since = 0.0
        self.pooled = False  # sitting in the pool's idle deque
        self.peak_buffered = 0  # highest queued byte count seen (tests, metrics)

    # -- state seen by the pool and the client --------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def complete(self) -> bool:
        """The whole response arrived (its body may still sit in the queue)."""
        return self._complete

    @property
    def has_queued(self) -> bool:
        return bool(self._chunks)

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and self.keep_alive
            and self._request_done
            and not self._stray
            and not self._closed
            and not self.upgraded
        )

    def set_on_close(self, on_close: Callable[[UpstreamConnection], None]) -> None:
        """Arm the pool's callback, run once when this connection closes."""
        self._on_close = on_close

    def begin(self, is_head: bool) -> None:
        """Start an exchange on this connection."""
        self._start(is_head)
        self._request_done = False
        self.exchanges += 1

    def take_all(self) -> bytes:
        """Every queued body byte at once (for a complete response: the fast path)."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    def request_sent(self) -> None:
        self._request_done = True

    def idle(self) -> None:
        """The exchange is over and the connection goes back to the pool."""
        self._parser = None
        self.headers = []
        if self._chunks:  # released complete but unread: the bytes are not needed
            self._chunks.clear()
            self._buffered = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed or self._transport is None:
            raise self._closed_error()
        self._transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        if self._closed or self._transport is None:
            raise self._closed_error()
        self._transport.writelines(data)

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self, timeout_s: float | None, deadline: float | None) -> None:
        """Wait until the transport takes more data; returns early if a response
        head arrives while the request is still being sent (the upstream answered
        early, e.g. 413), so the caller can stop sending."""
        while self._write_paused:
            if self.head_done and not self.upgraded:
                return
            if self._closed:
                raise self._closed_error()
            await self._wait(timeout_s, deadline, drain=True)

    # -- reading ---------------------------------------------------------------------

    async def wait_head(self, timeout_s: float, deadline: float | None) -> None:
        while True:
            if self._exc is not None:
                raise self._exc
            if self.head_done:
                return
            if self._closed:
                raise self._closed_error()
            await self._wait(timeout_s, deadline)

    async def read_chunk(self, timeout_s: float | None, deadline: float | None) -> bytes:
        """The next queued body chunk, b"" once the response (or raw stream) ended."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered <= LOW_WATER:
                    self._reading_paused = False
                    if self._transport is not None and not self._closed:
                        self._transport.resume_reading()
                return chunk
            if self._complete:
                return b""
            if self._exc is not None:
                raise self._exc
            if self._closed:
                if self.upgraded:
                    return b""
                raise self._closed_error()
            await self._wait(timeout_s, deadline)

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Close gracefully (pending writes are flushed)."""
        if not self._closed:
            self._closed = True
            if self._transport is not None:
                self._transport.close()
            self._closed_now()

    def abort(self) -> None:
        """Close at once, dropping pending writes (mid-exchange failures)."""
        if not self._closed:
            self._closed = True
            if self._transport is not None:
                self._transport.abort()
            self._closed_now()

    def _fail(self, exc: GatewayError) -> None:
        if self._exc is None:
            self._exc = exc
        self.abort()

    def _closed_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    def _closed_error(self) -> GatewayError:
        if self._exc is not None:
            return self._exc
        return UpstreamClosed("upstream closed the connection", before_response=not self._got_bytes)

    # -- waiting ---------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _wait(
        self, timeout_s: float | None, deadline: float | None, *, drain: bool = False
    ) -> None:
        """Wait for the next event; UpstreamTimeout after `timeout_s` of silence or at
        `deadline` (loop time), whichever comes first. None: no limit."""
        loop = self._loop
        at = None if timeout_s is None else loop.time() + timeout_s
        by_deadline = deadline is not None and (at is None or deadline <= at)
        if by_deadline:
            at = deadline
        fut: asyncio.Future[bool] = loop.create_future()
        timer = None
        if drain:
            self._drain_waiter = fut
            if at is not None:
                timer = loop.call_at(at, _expire, fut)
        else:
            self._read_waiter = fut
            self._read_at = at
            if at is not None and (self._timer is None or self._timer_at > at):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(at, self._on_timer)
                self._timer_at = at
        try:
            woken = await fut
        finally:
            if drain:
                self._drain_waiter = None
            else:
                self._read_waiter = None
                self._read_at = None
            if timer is not None:
                timer.cancel()
        if not woken:
            if by_deadline:
                raise UpstreamTimeout("upstream deadline exceeded")
            raise UpstreamTimeout(f"upstream sent nothing for {timeout_s:g} s")

    def _on_timer(self) -> None:
        """Expire the current read wait if its time has come, else re-arm for it."""
        self._timer = None
        at, fut = self._read_at, self._read_waiter
        if at is None or fut is None or fut.done():
            return  # nobody waiting: the next wait arms a new timer
        if self._loop.time() >= at - 0.001:  # uvloop's clock has 1 ms resolution
            fut.set_result(False)
        else:
            self._timer = self._loop.call_at(at, self._on_timer)
            self._timer_at = at

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            if self.upgraded:
                self._queue(data)
                self._wake()
            else:
                # Bytes on an idle connection: the upstream is out of step with us.
                self._fail(UpstreamProtocolError("unsolicited data from upstream"))
            return
        error = self._feed(parser, data)
        if error is not None:
            self._fail(error)
        self._wake()

    def eof_received(self) -> bool | None:
        self._end_of_stream(clean=True)
        # The transport closes itself (we return None); until connection_lost arrives
        # the connection must already count as closed, for writes and for the pool.
        self._closed = True
        self._closed_now()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_of_stream(clean=exc is None)
        self._closed = True
        self._closed_now()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    def _end_of_stream(self, *, clean: bool) -> None:
        if self._parser is None or self._complete or self._exc is not None:
            return
        self._exc = self._at_eof(clean)
        self._wake()

    def _queue(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self.peak_buffered:
            self.peak_buffered = self._buffered
        if (
            self._buffered > HIGH_WATER
            and not self._reading_paused
            and self._transport is not None
            and not self._closed
        ):
            self._reading_paused = True
            self._transport.pause_reading()

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self.upgraded:
            state = "upgraded"
        elif self._parser is None:
            state = "idle"
        elif self._complete:
            state = "complete"
        elif self.head_done:
            state = "body"
        else:
            state = "head"
        return (
            f"<UpstreamConnection {state} exchanges={self.exchanges} status={self.status} "
            f"buffered={self._buffered} paused_r={self._reading_paused} "
            f"paused_w={self._write_paused}>"
        )
