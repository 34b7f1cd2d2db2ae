"""The client side: aiohttp's low-level server, and the hop from it into the chain.

Only this module (and the admin app) touches aiohttp types. `Handler.handle` turns
an aiohttp request into an Exchange, runs the matched route's compiled chain, and
writes the Reply back: small complete bodies in one write, everything else streamed
chunk by chunk with backpressure (each `await resp.write` waits for the socket to
drain, and the upstream is only read when the client has taken the last chunk). A
fresh cache hit on a route with nothing before the cache is answered before any
Exchange exists (the fast path, gateway/filters/cache.py).

`GatewayProtocol` extends aiohttp's RequestHandler with what a public edge needs and
aiohttp lacks:
- a header timeout: a client that has not sent complete request headers within
  `server.header_timeout` is cut off (slowloris), on the first request and on every
  later one of a keep-alive connection;
- the right status for oversized input: aiohttp answers 400 to everything; here a
  request line over the limit gets 414 and a header line or header count over the
  limit gets 431 (RFC 9110 15.5.15, RFC 6585 5).
These rely on RequestHandler internals (`_messages`, `_current_request`,
`_request_count`), stable across aiohttp 3.10-3.14; tests/server pins the behaviour.

Before routing, `Handler.handle` refuses what llhttp lets through but an upstream could
read differently (gateway/requestcheck.py: versions, transfer codings, targets), with
the connection closed after the answer. A stalled request body gets 408
(`server.body_timeout`, then the connection is closed at once, without aiohttp's
lingering read), and a client that stops taking a streamed response is cut after
`server.send_timeout`. tests/hostile/ holds the raw-socket suite for all of it.
"""

from __future__ import annotations

import asyncio
import logging
from random import getrandbits
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from gateway.errors import BadRequest, ClientDisconnected, GatewayError, RequestTimeout
from gateway.exchange import Exchange, Reply, TLSInfo
from gateway.observability.accesslog import AccessLog, cache_outcome
from gateway.observability.metrics import NO_ROUTE, REQUESTS
from gateway.requestcheck import Refusal, check_transfer_encoding, check_version, origin_form
from gateway.respond import (
    BYTES_OUT,
    SMALL_BODY_BYTES,
    Response,
    cache_hit,
    close_after,
    fast_hit_response,
    host_without_port,
    plain,
    redirect_to_https,
    refusal,
    send_stream,
    splice,
)
from gateway.tls.facts import facts_from_ssl_object

if TYPE_CHECKING:
    from gateway.cache.entry import Entry
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.server")


class GatewayProtocol(RequestHandler):
    __slots__ = ("_gw_header_timeout", "_gw_header_timer", "_gw_peer", "_gw_seen", "_gw_tls")

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gw_header_timeout = manager.header_timeout_s
        self._gw_header_timer: asyncio.TimerHandle | None = None
        self._gw_seen = 0
        self._gw_tls: TLSInfo | None = None
        self._gw_peer: tuple[str, int] = ("", 0)  # the client's address, read once

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self._gw_peer = (peer[0], peer[1])
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_count != self._gw_seen:  # a complete request head arrived
            self._gw_seen = self._request_count
            self._disarm_header_timer()
        elif self._gw_header_timer is None and self._waiting_for_head():
            self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self._current_request is None and not self._messages

    def _arm_header_timer(self) -> None:
        if self._gw_header_timeout > 0:
            loop = asyncio.get_running_loop()
            self._gw_header_timer = loop.call_later(self._gw_header_timeout, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._gw_header_timer is not None:
            self._gw_header_timer.cancel()
            self._gw_header_timer = None

    def _header_timeout(self) -> None:
        # Armed when a connection opens or when bytes of a new head arrive on an idle
        # keep-alive connection; disarmed as soon as a complete head is parsed. So if
        # it fires, the head it was armed for never completed.
        self._gw_header_timer = None
        if self.transport is not None and self._request_count == self._gw_seen:
            peer = self.transport.get_extra_info("peername")
            log.warning("header timeout: closing connection from %s", peer)
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        manager = cast(GatewayServer, self._manager)
        code = "bad_request"
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == manager.max_request_line:
                status, code = 414, "uri_too_long"
            else:
                status, code = 431, "request_header_fields_too_large"
        elif isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
            status, code = 431, "request_header_fields_too_large"
        elif status >= 500:
            code = "internal_error"
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if status >= 500:
            log.error("error handling request from %s", peer, exc_info=exc)
        else:
            log.info("rejected request from %s: %s %s", peer, status, exc or message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        rid = f"{getrandbits(128):032x}"
        msg = {400: "malformed request", 414: "request line too long"}.get(
            status, "request headers too large" if status == 431 else "internal error"
        )
        reply = Reply.error(status, code, msg, rid)
        resp = Response(status=status, body=reply.body, headers=reply.headers)
        resp.force_close()
        return resp


class GatewayServer(web.Server):
    """aiohttp's low-level server, making GatewayProtocol connections."""

    def __init__(
        self,
        handler: Any,
        *,
        header_timeout_s: float,
        max_request_line: int,
        max_header_field: int,
        max_headers: int,
        keepalive_timeout_s: float,
    ) -> None:
        # aiohttp checks the request line against max_line_size and each header line
        # against max_field_size; the two limits must differ so handle_error can tell
        # which one a LineTooLong came from.
        if max_header_field == max_request_line:
            max_header_field += 1
        super().__init__(
            handler,
            max_line_size=max_request_line,
            max_field_size=max_header_field,
            max_headers=max_headers,
            keepalive_timeout=keepalive_timeout_s,
            access_log=None,
        )
        self.header_timeout_s = header_timeout_s
        self.max_request_line = max_request_line

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)


class ClientBody:
    """The client's request body as a BodySource; sends 100 Continue on first read.

    Each read waits at most `timeout_s` for the client's next bytes (server.body_timeout):
    a client that stalls mid-body gets 408, and the upstream exchange it fed is aborted
    (the pool discards a connection whose request failed part-way)."""

    __slots__ = ("_continue", "_request", "_timeout_s")

    def __init__(self, request: BaseRequest, expect_continue: bool, timeout_s: float) -> None:
        self._request = request
        self._continue = expect_continue
        self._timeout_s = timeout_s

    async def read(self) -> bytes:
        content = self._request.content
        try:
            if not self._continue:
                # Bytes already buffered (or the end already seen): handed out without
                # arming a timer, as readany would (same exceptions, same bytes).
                data = content.read_nowait()
                if data or content.is_eof():
                    return data
            async with asyncio.timeout(self._timeout_s):
                if self._continue:
                    self._continue = False
                    await self._request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return await content.readany()
        except TimeoutError:
            raise RequestTimeout(f"client sent no body bytes for {self._timeout_s:g} s") from None
        except ConnectionError as exc:
            raise ClientDisconnected(f"client went away mid-body: {exc}") from None
        except HttpProcessingError as exc:  # e.g. broken chunked framing from the client
            raise BadRequest(f"malformed request body: {exc.message}") from None


class Handler:
    """Request entry point for one listener; holds the current Runtime (swapped on reload)."""

    __slots__ = ("access_log", "listener", "redirect_port", "runtime", "scheme")

    def __init__(
        self,
        runtime: Runtime,
        scheme: str = "http",
        *,
        listener: str = "",
        redirect_port: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.scheme = scheme
        self.listener = listener  # RFC 7239 node, quoted: '"127.0.0.1:8443"'
        self.redirect_port = redirect_port
        self.access_log: AccessLog | None = None  # set by the worker when the log is on

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        rt = self.runtime  # one snapshot: this request finishes on this config
        srv = rt.config.server
        rid_header = srv.request_id_header
        raw = request.raw_headers
        if self.redirect_port is not None:
            return redirect_to_https(request, self.redirect_port)
        try:
            peer_ip, peer_port = cast(GatewayProtocol, request.protocol)._gw_peer
        except AttributeError:  # a plain aiohttp protocol (embedding): ask the transport
            peer = request.transport.get_extra_info("peername") if request.transport else None
            peer_ip, peer_port = (peer[0], peer[1]) if peer else ("", 0)
        client_ip, trusted = peer_ip, False
        if rt.trusted.networks:  # none configured (common): no X-Forwarded-For to read
            client_ip, trusted = rt.trusted.resolve(
                peer_ip, request.headers.getall("X-Forwarded-For", ())
            )
        # A request id is believed only from a trusted proxy; anyone else gets ours.
        rid = (trusted and request.headers.get(rid_header)) or getrandbits(128).to_bytes(16).hex()
        # Only add up the header bytes when aiohttp's per-line limit does not already
        # rule out exceeding the total (the common case: a handful of headers).
        if len(raw) * srv.max_header_field > srv.max_header_size and (
            sum(len(k) + len(v) + 4 for k, v in raw) > srv.max_header_size
        ):
            log.info("431: request headers over %d bytes (id=%s)", srv.max_header_size, rid)
            return plain(
                Reply.error(
                    431, "request_header_fields_too_large", "request headers too large", rid
                ),
                rid_header,
                rid,
            )
        try:  # what llhttp lets through but would make the upstream read it otherwise
            version = request.version
            if version is not HttpVersion11:
                check_version(*version)
            if "Transfer-Encoding" in request.headers:
                te = request.headers.getall("Transfer-Encoding")
                check_transfer_encoding(te, version.minor)
            raw_host = request.headers.get("Host", "")
            target = origin_form(
                request.raw_path, request.method, raw_host, srv.allow_encoded_slashes
            )
        except Refusal as exc:
            return refusal(request, exc, rid_header, rid)
        path, _, query = target.partition("?")
        req_headers = request.headers
        # Not request.host: without a Host header aiohttp would resolve our own FQDN.
        host = host_without_port(raw_host).lower()
        method = request.method
        t0 = perf_counter()
        route = rt.table.match(host, path, method, req_headers)
        if (  # a fresh cache hit on a route with no filter before the cache: no chain
            route is not None
            and route.cache_fast is not None
            and method == "GET"
            and version is HttpVersion11
            and request.keep_alive
            and not request.body_exists
        ):
            found = route.cache_fast.fast_hit(
                host, path, query, self.scheme, req_headers, SMALL_BODY_BYTES
            )
            if found is not None:
                entry, head = found
                fast = fast_hit_response(entry, head, rid_header, rid)
                seconds = perf_counter() - t0
                REQUESTS.observe(route.name, method, entry.status, seconds)
                if (alog := self.access_log) is not None:
                    _log_hit(alog, rid, client_ip, path, query, route.name, entry, seconds)
                return fast
        headers: CIMultiDict[str] = CIMultiDict(req_headers)
        if route is None:
            REQUESTS.observe(NO_ROUTE, method, 404, perf_counter() - t0)
            missing = Reply.error(404, "no_route", "no route matches", rid)
            if self.access_log is not None:
                self.access_log.record(
                    request_id=rid,
                    client=client_ip,
                    method=method,
                    path=path,
                    query=query,
                    status=404,
                    bytes_in=0,
                    bytes_out=len(missing.body),
                    seconds=perf_counter() - t0,
                    route=None,
                    state=None,
                    region=None,
                    cache=None,
                )
            return plain(missing, rid_header, rid)
        upgrade = "Upgrade" in headers and "upgrade" in headers.get("Connection", "").lower()
        body = None
        if request.body_exists:
            expect = headers.get("Expect", "").lower() == "100-continue"
            body = ClientBody(request, expect and request.version >= (1, 1), srv.body_timeout)
        ex = Exchange(
            method=method,
            path=path,
            query=query,
            headers=headers,
            host=host,
            scheme=self.scheme,
            client_ip=client_ip,
            client_port=peer_port,
            peer_ip=peer_ip,
            trusted_peer=trusted,
            tls=_tls_info(request.protocol) if self.scheme == "https" else None,
            listener=self.listener,
            request_id=rid,
            route=route,
            body=body,
            content_length=request.content_length if body is not None else None,
            upgrade=upgrade,
        )
        assert route.handler is not None
        REQUESTS.active += 1  # metrics: one observation per request (finally)
        status = 500
        reply = None
        try:
            try:
                reply = await route.handler(ex)
            except GatewayError as exc:
                log.warning(
                    "%d %s on route %s (id=%s): %s",
                    exc.status,
                    exc.code,
                    route.name,
                    rid,
                    exc.message,
                )
                reply = Reply.error(exc.status, exc.code, exc.message, rid)
            except ClientDisconnected as exc:
                log.info(
                    "client %s gone on route %s (id=%s): %s", ex.client_ip, route.name, rid, exc
                )
                request.protocol.force_close()
                status = 499
                return Response(status=499)  # never sent: the connection is closed
            status = reply.status
            if reply.stream is not None and (hit := cache_hit(request, reply, rid_header, rid)):
                return hit
            reply.headers[rid_header] = rid
            if reply.stream is None:
                resp = Response(status=status, headers=reply.headers, body=reply.body)
                if status == 408:  # the body stalled: this connection carries no more
                    return await close_after(request, resp)
                return resp
            if status == 101:
                return await splice(request, reply)
            return await send_stream(request, reply, rid_header, rid, srv.send_timeout)
        finally:
            REQUESTS.active -= 1
            seconds = perf_counter() - t0
            REQUESTS.observe(route.name, method, status, seconds, ex.state)
            if self.access_log is not None:
                _log_access(self.access_log, request, ex, status, seconds, reply)

    def __repr__(self) -> str:
        return f"<Handler {self.runtime!r}>"


def _log_access(
    log: AccessLog,
    request: BaseRequest,
    ex: Exchange,
    status: int,
    seconds: float,
    reply: Reply | None,
) -> None:
    """One access log line: the byte counts and cache outcome read off the reply."""
    out: int | None = 0
    cache = None
    if reply is not None:
        cache_status = reply.headers.get("Cache-Status")
        cache = cache_outcome(cache_status) if cache_status is not None else None
        up = reply.stream
        if up is None:
            out = len(reply.body)
        elif request.method == "HEAD" or status in (204, 304) or status < 200:
            out = 0
        else:  # relayed (counted), else announced; an upgrade's bytes are not counted
            out = request.get(BYTES_OUT, up.content_length)
    st = ex.state
    log.record(
        request_id=ex.request_id,
        client=ex.client_ip,
        method=ex.method,
        path=ex.path,
        query=ex.query,
        status=status,
        bytes_in=request.content.total_bytes if ex.body is not None else 0,
        bytes_out=out,
        seconds=seconds,
        route=ex.route.name,
        state=st,
        region=REQUESTS.region_of(st) if st else None,
        cache=cache,
    )


def _log_hit(
    log: AccessLog,
    rid: str,
    client_ip: str,
    path: str,
    query: str,
    route: str,
    entry: Entry,
    seconds: float,
) -> None:
    """The access log line of a fast-path cache hit: what `_log_access` writes for the
    same hit on the full path (no body in, the entry's body out, no upstream state)."""
    log.record(
        request_id=rid,
        client=client_ip,
        method="GET",
        path=path,
        query=query,
        status=entry.status,
        bytes_in=0,
        bytes_out=len(entry.body),
        seconds=seconds,
        route=route,
        state={},
        region=None,
        cache="hit",
    )


def _tls_info(protocol: Any) -> TLSInfo | None:
    """The connection's TLS facts, computed on its first request and kept."""
    cached = getattr(protocol, "_gw_tls", None)
    if cached is not None:
        return cast(TLSInfo, cached)
    transport = protocol.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is None:
        return None
    cipher = sslobj.cipher()
    info = TLSInfo(
        version=sslobj.version() or "",
        cipher=cipher[0] if cipher else "",
        sni=getattr(sslobj, "gateway_sni", None),
        client_cert=facts_from_ssl_object(sslobj),
    )
    protocol._gw_tls = info
    return info
