"""Response parsing for UpstreamConnection: httptools (llhttp) callbacks and framing.

`ResponseParsing` is the base class of `UpstreamConnection`, split out to keep each
module readable; it holds the head of the response being parsed and the callbacks
llhttp calls, and leaves the byte queue (`_queue`) to the connection. The callbacks
live on the protocol object itself (no extra indirection per callback on the hot path).

Framing follows llhttp, plus what it cannot know by itself:
- a response to HEAD has no content, whatever its head says (RFC 9110 §9.3.2): the
  message completes at its head;
- a body delimited by the end of the connection (no Content-Length, not chunked,
  RFC 9112 §6.3 rule 8) completes on a clean EOF, never on a reset;
- 1xx interim responses other than 101 (100 Continue, 103 Early Hints) are dropped
  and the final response follows on the same parser (RFC 9110 §15.2);
- 101 Switching Protocols: llhttp stops at the end of the head (HttpParserUpgrade with
  the offset of the first raw byte); a 101 without `Connection: upgrade` makes llhttp
  fail, and is refused as a protocol error (RFC 9110 §7.8);
- any byte after a complete response (a second message, a body behind a HEAD
  response, garbage) marks the connection `_stray`: never reused;
- llhttp puts no bound on a response head (httptools buffers a header value until
  it ends), so the bytes received before the head completes are counted: over
  MAX_HEAD_BYTES (1xx heads included) the response is a protocol error (502).
"""

from __future__ import annotations

import asyncio

import httptools

from gateway.errors import GatewayError, UpstreamClosed, UpstreamProtocolError

MAX_HEAD_BYTES = 64 * 1024
"""Largest upstream response head (status line and header fields), as Envoy's default."""

_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"


class ResponseParsing(asyncio.Protocol):
    __slots__ = (
        "_complete",
        "_got_bytes",
        "_head_bytes",
        "_informational",
        "_is_head",
        "_parser",
        "_stray",
        "chunked",
        "content_length",
        "head_done",
        "headers",
        "keep_alive",
        "reason",
        "status",
        "upgraded",
    )

    def __init__(self) -> None:
        self._parser: httptools.HttpResponseParser | None = None
        self._is_head = False
        self._got_bytes = False  # any byte of the response arrived (stale-retry rule)
        self._head_bytes = 0  # bytes received while the head was incomplete
        self._informational = False
        self._complete = False
        self._stray = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = False
        self.head_done = False
        self.upgraded = False

    def _queue(self, data: bytes) -> None:
        raise NotImplementedError

    def _start(self, is_head: bool) -> None:
        """A fresh parser per exchange: cheap, and it lets HEAD work."""
        self._parser = httptools.HttpResponseParser(self)
        self._is_head = is_head
        self._got_bytes = self._informational = self._complete = False
        self._head_bytes = 0
        self.status = 0
        self.reason = b""
        self.headers = []
        self.content_length = None
        self.chunked = self.keep_alive = self.head_done = False

    def _feed(self, parser: httptools.HttpResponseParser, data: bytes) -> GatewayError | None:
        """Parse `data`; returns the protocol error to fail the connection with."""
        self._got_bytes = True
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._parser = None
            self.upgraded = True
            offset = int(e.args[0])
            if offset < len(data):
                self._queue(data[offset:])
        except httptools.HttpParserError as e:
            if self._complete:
                self._stray = True  # garbage after a complete response: never reuse
            elif self.status == 101:
                return UpstreamProtocolError("101 response without Connection: upgrade")
            else:
                return UpstreamProtocolError(f"invalid response from upstream: {e}")
        if self._head_bytes > MAX_HEAD_BYTES and not self.head_done:
            return UpstreamProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
        return None

    def _at_eof(self, clean: bool) -> GatewayError | None:
        """The stream ended during an exchange: complete an EOF-delimited body, or
        return the error (truncation) the waiting reader gets."""
        if (
            clean
            and self.head_done
            and self.content_length is None
            and not self.chunked
            and not self.upgraded
        ):
            self._complete = True  # RFC 9112 §6.3, rule 8
            self.keep_alive = False
            return None
        if self.head_done:
            return UpstreamClosed("upstream closed the connection mid-body")
        return UpstreamClosed("upstream closed the connection", before_response=not self._got_bytes)

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._stray = True  # a second message behind the response

    def on_status(self, status: bytes) -> None:
        if not self._complete:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:
            return
        lname = name.lower()
        if lname == _CONTENT_LENGTH:
            self.content_length = int(value)
        elif lname == _TRANSFER_ENCODING and b"chunked" in value.lower():
            self.chunked = True
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        assert self._parser is not None
        status = self._parser.get_status_code()
        self.status = status
        if 100 <= status < 200 and status != 101:
            self._informational = True  # dropped at its message end
            return
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._is_head:
            self._complete = True  # RFC 9110 §9.3.2: no content, whatever the head says

    def on_body(self, body: bytes) -> None:
        if self._complete:
            if body:
                self._stray = True  # e.g. a body after a HEAD response
            return
        self._queue(body)

    def on_message_complete(self) -> None:
        if self._complete or self.status == 101:
            return
        if self._informational:
            self._informational = False
            self.status = 0
            self.reason = b""
            self.headers = []
            self.content_length = None
            self.chunked = False
            return
        self._complete = True
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive()
