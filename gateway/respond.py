"""Writing a Reply back to the client connection (aiohttp types; used by server.py).

- Small complete bodies (errors, small proxied bodies, cache hits) go out in one
  buffer: `RawResponse` joins the status line, the headers and the body and writes
  them with one transport.write, skipping aiohttp's header re-validation; a cache hit
  whose headers no filter touched reuses its pre-serialised head (`cache_hit`), and
  server.py's fast path sends the same bytes (`fast_hit_response`).
- Larger or unknown-length bodies are relayed chunk by chunk (`send_stream`): each
  write waits for the socket to drain, bounded by `server.send_timeout`, so a client
  that stops reading cannot hold the upstream connection; an upstream failure before
  the body is an honest error answer, after it a cut connection.
- An accepted Upgrade (WebSocket) is spliced: raw bytes both ways (`splice`).
- `Response`/`StreamResponse` take out what aiohttp invents (Server, a default
  Content-Type): a proxy passes on what the upstream said (RFC 9110 8.3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from gateway.errors import GatewayError
from gateway.exchange import Reply
from gateway.requestcheck import Refusal

if TYPE_CHECKING:
    from gateway.cache.entry import Entry
    from gateway.upstream import UpstreamResponse

log = logging.getLogger("gateway.server")


def host_without_port(host: str) -> str:
    """'[v6]:port' keeps its brackets, 'name:port' loses ':port'."""
    return host[: host.find("]") + 1] if host[:1] == "[" else host.partition(":")[0]


# Bodies up to this size (with a known length) are read whole and written in one go.
SMALL_BODY_BYTES = 64 * 1024
# request[BYTES_OUT]: body bytes relayed by send_stream (for the access log).
BYTES_OUT = web.RequestKey("gateway.bytes_out", int)


class _NoInventedHeaders:
    """aiohttp adds `Server: Python/x aiohttp/y` and a default Content-Type to every
    response. A proxy passes on what the upstream said (RFC 9110 8.3: no invented
    Content-Type) and should not advertise its own software, so whatever aiohttp
    added that was not there before is taken out again."""

    async def _prepare_headers(self) -> None:
        headers: CIMultiDict[str] = self.headers  # type: ignore[attr-defined]
        had_server = "Server" in headers
        had_type = "Content-Type" in headers
        await super()._prepare_headers()  # type: ignore[misc]
        if not had_server:
            headers.popall("Server", None)
        if not had_type:
            headers.popall("Content-Type", None)


class Response(_NoInventedHeaders, web.Response):
    pass


class StreamResponse(_NoInventedHeaders, web.StreamResponse):
    pass


async def close_after(request: BaseRequest, resp: web.StreamResponse) -> web.StreamResponse:
    """Send `resp`, then close the connection at once: aiohttp would otherwise linger
    up to 10 s reading the rest of a body the client has stopped sending."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


def redirect_to_https(request: BaseRequest, port: int) -> web.Response:
    """308 to the same URL over https (RFC 9110 15.4.9 keeps the method and body)."""
    host = host_without_port(request.headers.get("Host", ""))
    if not host:
        reply = Reply.error(400, "bad_request", "a Host header is needed to redirect", "")
        return Response(status=400, headers=reply.headers, body=reply.body)
    authority = host if port == 443 else f"{host}:{port}"
    resp = Response(status=308, headers={"Location": f"https://{authority}{request.raw_path}"})
    return resp


def plain(reply: Reply, rid_header: str, rid: str) -> web.Response:
    reply.headers[rid_header] = rid
    return Response(status=reply.status, headers=reply.headers, body=reply.body)


def refusal(request: BaseRequest, exc: Refusal, rid_header: str, rid: str) -> web.StreamResponse:
    """The answer to a head that cannot be forwarded safely: written as HTTP/1.1 (the
    version the client claimed may be one we do not speak), connection closed after."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    log.info("rejected request from %s: %d %s (id=%s)", peer, exc.status, exc.message, rid)
    reply = Reply.error(exc.status, exc.code, exc.message, rid)
    reply.headers[rid_header] = rid
    reply.headers["Connection"] = "close"
    phrase = HTTPStatus(exc.status).phrase
    body = b"" if request.method == "HEAD" else reply.body  # RFC 9110 9.3.2
    return RawResponse(exc.status, phrase, reply.headers, body, keep_alive=False)


async def send_stream(
    request: BaseRequest, reply: Reply, rid_header: str, rid: str, send_timeout_s: float
) -> web.StreamResponse:
    """Relay the upstream's body; each write waits at most `send_timeout_s` for the
    client to take bytes (a client that stops reading would otherwise hold the
    upstream connection for as long as it keeps its socket open)."""
    up = cast("UpstreamResponse", reply.stream)
    status = reply.status
    if request.method == "HEAD" or status in (204, 304) or status < 200:
        up.release()
        empty = StreamResponse(status=status, reason=up.reason, headers=reply.headers)
        if up.content_length is not None and request.method == "HEAD":
            empty.headers["Content-Length"] = str(up.content_length)
        return empty
    resp: web.StreamResponse | None = None
    try:
        if up.content_length is not None and up.content_length <= SMALL_BODY_BYTES:
            body = await up.read_all()
            up.release()
            if request.keep_alive and request.version == (1, 1):
                return RawResponse(status, up.reason, reply.headers, body)
            return Response(status=status, reason=up.reason, headers=reply.headers, body=body)
        resp = StreamResponse(status=status, reason=up.reason, headers=reply.headers)
        if up.content_length is not None:
            resp.content_length = up.content_length
        elif request.version >= (1, 1):
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        while chunk := await up.read():
            sent += len(chunk)
            async with asyncio.timeout(send_timeout_s):
                await resp.write(chunk)
        up.release()
        request[BYTES_OUT] = sent
        return resp
    except GatewayError as exc:
        up.abort()
        if resp is None:  # nothing sent yet: the client still gets an honest error
            log.warning("upstream failed before the body (%s, id=%s): %s", exc.code, rid, exc)
            return plain(Reply.error(exc.status, exc.code, exc.message, rid), rid_header, rid)
        # Headers are already out: the only honest signal left is a cut connection.
        log.warning("upstream failed mid-response (%s, id=%s): %s", exc.code, rid, exc.message)
        request.protocol.force_close()
        return resp
    except ConnectionError as exc:
        up.abort()
        log.info("client went away mid-response (id=%s): %s", rid, exc)
        request.protocol.force_close()
        return resp if resp is not None else Response(status=499)
    except TimeoutError:
        up.abort()
        log.info("client took no bytes for %g s mid-response (id=%s)", send_timeout_s, rid)
        request.protocol.force_close()
        return resp if resp is not None else Response(status=499)
    except BaseException:
        up.abort()
        raise


_STATUS_LINES = {
    int(st): f"HTTP/1.1 {int(st)} {st.phrase}\r\n".encode("latin-1") for st in HTTPStatus
}


class _DateCache:
    """The IMF-fixdate Date header value (and its header line), formatted once per second."""

    second = 0
    value = ""
    line = b""

    @classmethod
    def get(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.value = formatdate(now, usegmt=True)
            cls.line = f"Date: {cls.value}\r\n".encode("latin-1")
            cls.second = now
        return cls.value

    @classmethod
    def get_line(cls) -> bytes:
        """b"Date: <value>\\r\\n"."""
        if int(time.time()) != cls.second:
            cls.get()
        return cls.line


class RawResponse(web.StreamResponse):
    """A complete keep-alive HTTP/1.1 response, serialized here in one buffer.

    The hot path for small proxied bodies: aiohttp's Response builds and validates
    its headers again, formats its own Date and Server, and writes head and body
    separately; here the upstream's headers (already stripped of hop-by-hop ones)
    are joined once and written with the body in a single transport.write. Header
    values came from llhttp or from the gateway, so they hold no CR/LF.
    """

    __slots__ = ("_gw_keep_alive", "_raw")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        body: bytes,
        *,
        keep_alive: bool = True,
    ) -> None:
        # Not StreamResponse.__init__ (header copy and validation, reason checks), as
        # in `prebuilt`: the reason is llhttp's or HTTPStatus's (no CR/LF).
        self._state = {}
        self._headers = CIMultiDict()
        self._status = status
        self._reason = reason
        self._gw_keep_alive = keep_alive
        line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        # "name: value" joined in C (map over the pairs), one CRLF after each line.
        lines = "\r\n".join(map(": ".join, headers.items()))
        if "Date" not in headers:
            tail = f"\r\nDate: {_DateCache.get()}\r\nContent-Length: {len(body)}\r\n\r\n"
        else:
            tail = f"\r\nContent-Length: {len(body)}\r\n\r\n"
        if not lines:
            tail = tail[2:]
        self._raw = b"".join((line, (lines + tail).encode("latin-1"), body))

    @classmethod
    def prebuilt(cls, status: int, reason: str, head: bytes, body: bytes) -> RawResponse:
        """From header lines already serialised (a cache hit's, gateway/cache/answer.py)."""
        # Not StreamResponse.__init__ (header validation, reason lookup: ~1.5 us a hit):
        # aiohttp's protocol only calls prepare/write_eof and reads keep_alive, and the
        # class defaults cover the rest of StreamResponse's state.
        self = cls.__new__(cls)
        self._state = {}
        self._headers = CIMultiDict()
        self._status = status
        self._reason = reason
        self._gw_keep_alive = True
        line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        tail = f"Date: {_DateCache.get()}\r\nContent-Length: {len(body)}\r\n\r\n"
        self._raw = b"".join((line, head, tail.encode("latin-1"), body))
        return self

    async def prepare(self, request: BaseRequest) -> None:
        if self._raw and request.transport is not None:
            request.transport.write(self._raw)
        self._raw = b""
        self._keep_alive = self._gw_keep_alive
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def cache_hit(request: BaseRequest, reply: Reply, rid_header: str, rid: str) -> RawResponse | None:
    """A small cache hit whose headers no filter edited, sent from the entry's
    pre-serialised head (`head_for`, gateway/cache/answer.py); None: the usual path."""
    head_for = getattr(reply.stream, "head_for", None)
    status = reply.status
    if (
        head_for is None
        or status < 200
        or status in (204, 304)
        or request.method == "HEAD"
        or not request.keep_alive
        or request.version != (1, 1)
    ):
        return None
    head: bytes | None = head_for(reply.headers)
    up = cast("UpstreamResponse", reply.stream)
    if head is None or up.content_length is None or up.content_length > SMALL_BODY_BYTES:
        return None
    body: bytes = cast(Any, up).body()
    up.release()
    return hit_response(status, up.reason, head, body, rid_header, rid)


def hit_response(
    status: int, reason: str, head: bytes, body: bytes, rid_header: str, rid: str
) -> RawResponse:
    """A cache hit from its pre-serialised head plus the request id (`cache_hit`)."""
    return RawResponse.prebuilt(
        status, reason, head + f"{rid_header}: {rid}\r\n".encode("latin-1"), body
    )


def fast_hit_response(entry: Entry, head: bytes, rid_header: str, rid: str) -> RawResponse:
    """What `cache_hit` sends for the same hit (tests/cache/test_fast_path.py compares
    the bytes), for server.py's fast path (CacheFilter.fast_hit gave `head`): the
    status line + head and the Content-Length line are kept on the entry (`wire`) for
    as long as `head` is the same object, so a hit joins five pieces and formats one."""
    wire = entry.wire
    if wire is None or wire[0] is not head:
        status = entry.status
        line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {entry.reason}\r\n".encode(
            "latin-1"
        )
        cl = f"Content-Length: {len(entry.body)}\r\n\r\n".encode("latin-1")
        wire = entry.wire = (head, line + head, cl)
    self = RawResponse.__new__(RawResponse)  # as in RawResponse.prebuilt
    self._state = {}
    self._headers = CIMultiDict()
    self._status = entry.status
    self._reason = entry.reason
    self._gw_keep_alive = True
    rid_line = f"{rid_header}: {rid}\r\n".encode("latin-1")
    self._raw = b"".join((wire[1], rid_line, _DateCache.get_line(), wire[2], entry.body))
    return self


class _RawClientReader:
    """Receives the client's bytes after an accepted Upgrade (set_parser target)."""

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport = transport

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(data)
        if self.transport is not None and self.queue.qsize() > 64:
            self.transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")

    async def read(self) -> bytes:
        data = await self.queue.get()
        if self.transport is not None and self.queue.qsize() <= 16:
            self.transport.resume_reading()
        return data


async def splice(request: BaseRequest, reply: Reply) -> web.StreamResponse:
    """WebSocket (any Upgrade) passthrough: relay raw bytes both ways until one ends."""
    up = cast("UpstreamResponse", reply.stream)
    resp = StreamResponse(status=101, reason=up.reason, headers=reply.headers)
    await resp.prepare(request)
    reader = _RawClientReader(request.transport)
    request.protocol.set_parser(reader)  # type: ignore[arg-type]

    async def client_to_upstream() -> None:
        while data := await reader.read():
            up.write(data)
            await up.drain()

    async def upstream_to_client() -> None:
        while data := await up.read():
            await resp.write(data)

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        up.abort()
        request.protocol.force_close()
    return resp
