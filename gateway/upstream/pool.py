"""A keep-alive connection pool for one upstream endpoint.

How it works
------------
Idle connections sit in a deque, newest at the right. `request()` takes the newest
(the least likely to have been closed by the upstream), drops the ones that are closed
or idle for longer than `idle_timeout_s`, and opens a new connection when none is left.
A single timer per pool (not one per connection) sweeps expired connections from the
left, where the oldest are.

`open` counts connections established, being established, or reserved for a waiter;
it never exceeds `max_connections`. Past it, requests queue in FIFO order: a released
reusable connection is handed straight to the first waiter (no barging), and a closed
one frees a slot that is reserved for the first waiter before it is woken. A waiter
gives up after the connect timeout with a 503 "pool exhausted".

Stale keep-alive connections (RFC 9112 §9.6, the upstream may close an idle connection
at any time): a connection known to be closed is dropped when taken from the deque;
if a *reused* connection fails before any response byte and the body can be replayed
(no body, or a `BytesBody` held in memory), the request is retried once on a new
connection when the caller allows it (`retry_stale`, for idempotent requests).

Transport faults are translated here, where they enter: refused/unreachable/timeout
and TLS failures all become UpstreamConnectError (502), as nothing was sent.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from dataclasses import dataclass

from gateway.body import BodySource, BytesBody
from gateway.errors import BadRequest, UpstreamConnectError, UpstreamTimeout
from gateway.upstream.client import (
    StaleConnection,
    UpstreamResponse,
    encode_head,
    exchange,
    framing_for,
)
from gateway.upstream.connection import UpstreamConnection

_DEFAULT_PORTS = {"http": 80, "https": 443}

# A waiter's future resolves to a handed-over connection, None (a slot was reserved
# for it: connect) or False (gave up: timeout or pool closed).
_Grant = UpstreamConnection | None | bool


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    scheme: str  # "http" | "https"
    host: str
    port: int
    max_connections: int = 512  # open (busy + idle) per endpoint; beyond: wait, then 503
    max_idle: int = 64
    idle_timeout_s: float = 60.0
    tls_verify: bool = True
    tls_ca_file: str | None = None  # None: the system's trust store
    tls_server_name: str | None = None  # SNI and the name verified; None: host
    tls_cert_file: str | None = None  # our client certificate toward the upstream (mTLS)
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"scheme must be http or https, not {self.scheme!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if self.max_connections < 1 or self.max_idle < 0 or self.idle_timeout_s <= 0:
            raise ValueError("max_connections >= 1, max_idle >= 0, idle_timeout_s > 0")

    @property
    def _authority_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal

    @property
    def key(self) -> str:
        return f"{self.scheme}://{self._authority_host}:{self.port}"

    @property
    def host_header(self) -> str:
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return self._authority_host
        return f"{self._authority_host}:{self.port}"


def _ssl_context(spec: EndpointSpec) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=spec.tls_ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"tls_ca_file {spec.tls_ca_file!r}: {e}") from None
    if not spec.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    if spec.tls_cert_file and spec.tls_key_file:  # our client certificate (upstream mTLS)
        from gateway.tls.context import load_client_cert_into

        load_client_cert_into(ctx, spec.tls_cert_file, spec.tls_key_file)
    return ctx


def _grant_timeout(fut: asyncio.Future[_Grant]) -> None:
    if not fut.done():
        fut.set_result(False)


class ConnectionPool:
    __slots__ = (
        "_closed",
        "_idle",
        "_in_flight",
        "_loop",
        "_open",
        "_server_hostname",
        "_ssl",
        "_sweeper",
        "_waiters",
        "connects",
        "key",
        "retries",
        "spec",
    )

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.key = spec.key
        self._ssl = _ssl_context(spec) if spec.scheme == "https" else None
        self._server_hostname = (spec.tls_server_name or spec.host) if self._ssl else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: deque[UpstreamConnection] = deque()
        self._waiters: deque[asyncio.Future[_Grant]] = deque()
        self._open = 0
        self._in_flight = 0
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.connects = 0  # connections established, ever
        self.retries = 0  # stale-connection retries, ever

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def open(self) -> int:
        return self._open

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: BodySource | None,
        *,
        content_length: int | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        deadline: float | None,
        retry_stale: bool,
    ) -> UpstreamResponse:
        """Send one request and return once the response head arrived."""
        if self._closed:
            raise UpstreamConnectError("connection pool is closed", status=503)
        data: bytes | None = None
        source = body
        if isinstance(body, BytesBody):
            # In memory already: keep it, so a stale-connection retry can resend it.
            data = await body.read()
            source = None
            if content_length is None:
                content_length = len(data) if data else None
            elif content_length != len(data):
                raise BadRequest("request body length differs from its Content-Length")
        elif body is None and content_length:
            raise BadRequest("request body missing")
        head = encode_head(method, target, headers, framing_for(content_length, source is not None))
        fresh = False
        while True:
            if not fresh and self._idle and self._loop is not None:
                conn, reused = self._take_idle(self._loop), True  # no await: the hot path
                if conn is None:
                    conn, reused = await self._acquire(fresh, connect_timeout_s, deadline)
            else:
                conn, reused = await self._acquire(fresh, connect_timeout_s, deadline)
            try:
                return await exchange(
                    conn,
                    self._release,
                    head=head,
                    is_head=method == "HEAD",
                    data=data,
                    source=source,
                    content_length=content_length,
                    read_timeout_s=read_timeout_s,
                    deadline=deadline,
                    may_retry=retry_stale and reused and not fresh,
                )
            except StaleConnection:
                self._discard(conn)
                self.retries += 1
                fresh = True
            except BaseException:
                self._discard(conn)
                raise

    async def close(self) -> None:
        """Close idle connections now; busy ones are closed when released."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            conn = self._idle.pop()
            conn.pooled = False
            conn.close()
        while self._waiters:
            _grant_timeout(self._waiters.popleft())

    # -- acquiring ---------------------------------------------------------------------

    async def _acquire(
        self, fresh: bool, connect_timeout_s: float, deadline: float | None
    ) -> tuple[UpstreamConnection, bool]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if not fresh:
            idle = self._take_idle(loop)
            if idle is not None:
                return idle, True
        if self._open < self.spec.max_connections:
            self._open += 1
        else:
            granted = await self._wait_for_slot(loop, connect_timeout_s)
            if granted is not None:
                return granted, True  # handed over by _release, already in flight
        try:
            conn = await self._connect(loop, connect_timeout_s, deadline)
        except BaseException:
            self._open -= 1
            self._wake_for_slot()
            raise
        self._in_flight += 1
        return conn, False

    def _take_idle(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection | None:
        """The most recently used idle connection that is still good, or None."""
        limit = loop.time() - self.spec.idle_timeout_s
        while self._idle:
            conn = self._idle.pop()
            conn.pooled = False
            if not conn.closed and conn.idle_since > limit:
                self._in_flight += 1
                return conn
            conn.close()
        return None

    async def _wait_for_slot(
        self, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> UpstreamConnection | None:
        fut: asyncio.Future[_Grant] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(timeout_s, _grant_timeout, fut)
        try:
            grant = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._give_back(fut.result())
            raise
        finally:
            timer.cancel()
        if isinstance(grant, bool):
            if self._closed:
                raise UpstreamConnectError("connection pool is closed", status=503)
            raise UpstreamConnectError(
                f"pool exhausted: {self.spec.max_connections} connections to {self.key} busy",
                status=503,
            )
        return grant

    def _give_back(self, grant: _Grant) -> None:
        """A waiter was cancelled just after being granted something."""
        if isinstance(grant, UpstreamConnection):
            self._release(grant, not grant.closed)
        elif grant is None:
            self._open -= 1
            self._wake_for_slot()

    def _wake_for_slot(self) -> None:
        while self._waiters and self._open < self.spec.max_connections:
            fut = self._waiters.popleft()
            if not fut.done():
                self._open += 1  # reserved for this waiter
                fut.set_result(None)
                return

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, timeout_s: float, deadline: float | None
    ) -> UpstreamConnection:
        spec = self.spec
        by_deadline = False
        if deadline is not None and deadline - loop.time() < timeout_s:
            timeout_s = deadline - loop.time()
            by_deadline = True
        conn = UpstreamConnection(loop)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(
                    lambda: conn,
                    spec.host,
                    spec.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except TimeoutError:
            if by_deadline:
                raise UpstreamTimeout("upstream deadline exceeded while connecting") from None
            raise UpstreamConnectError(f"connect to {self.key} timed out") from None
        except ssl.SSLCertVerificationError as e:
            raise UpstreamConnectError(
                f"TLS certificate verification failed for {self.key}: {e.verify_message}"
            ) from None
        except ssl.SSLError as e:
            raise UpstreamConnectError(f"TLS handshake with {self.key} failed: {e}") from None
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise UpstreamConnectError(f"connect to {self.key} failed: {reason}") from None
        if conn.closed:
            raise UpstreamConnectError(f"connection to {self.key} closed while connecting")
        conn.set_on_close(self._on_conn_closed)
        self.connects += 1
        return conn

    # -- giving back -------------------------------------------------------------------

    def _release(self, conn: UpstreamConnection, reuse: bool) -> None:
        """The response is done with `conn`: keep it (hand over or idle) or close it."""
        self._in_flight -= 1
        if not reuse or self._closed or conn.closed:
            conn.close()
            return
        conn.idle()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_flight += 1
                fut.set_result(conn)
                return
        if len(self._idle) >= self.spec.max_idle:
            conn.close()
            return
        assert self._loop is not None
        conn.idle_since = self._loop.time()
        conn.pooled = True
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_at(
                conn.idle_since + self.spec.idle_timeout_s, self._sweep
            )

    def _discard(self, conn: UpstreamConnection) -> None:
        self._in_flight -= 1
        conn.abort()

    def _on_conn_closed(self, conn: UpstreamConnection) -> None:
        self._open -= 1
        if conn.pooled:
            conn.pooled = False
            self._idle.remove(conn)
        self._wake_for_slot()

    def _sweep(self) -> None:
        assert self._loop is not None
        self._sweeper = None
        limit = self._loop.time() - self.spec.idle_timeout_s
        idle = self._idle
        while idle and idle[0].idle_since <= limit:
            conn = idle.popleft()
            conn.pooled = False
            conn.close()
        if idle:
            self._sweeper = self._loop.call_at(
                idle[0].idle_since + self.spec.idle_timeout_s, self._sweep
            )

    def __repr__(self) -> str:
        return (
            f"<ConnectionPool {self.key} open={self._open}/{self.spec.max_connections} "
            f"idle={len(self._idle)} in_flight={self._in_flight} waiting={self.waiting} "
            f"connects={self.connects} retries={self.retries}"
            f"{' closed' if self._closed else ''}>"
        )
