"""A real TLS server on loopback and a real TLS client, for handshake tests.

`TLSServer(ctx)` accepts connections with asyncio.start_server, records what the
server saw (client-certificate facts, ALPN, TLS version) and answers 'ok'. A failed
handshake never reaches the handler, so `server.seen` stays empty. `handshake()`
connects, returns the certificate the client was served, and reads the answer;
any TLS failure (on connect, or on the first read: in TLS 1.3 the client finishes
its handshake before the server has judged the client certificate) is an Outcome
with `ok=False` and the error text, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from types import TracebackType

from gateway.tls import ClientCertFacts, facts_from_ssl_object
from tests.tls.certs import PemFiles

TIMEOUT_S = 5.0


@dataclass
class Seen:
    facts: ClientCertFacts | None
    alpn: str | None
    version: str | None


@dataclass
class TLSServer:
    ctx: ssl.SSLContext
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> TLSServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        self.seen.append(
            Seen(facts_from_ssl_object(sslobj), sslobj.selected_alpn_protocol(), sslobj.version())
        )
        writer.write(b"ok\n")
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@dataclass
class Outcome:
    ok: bool
    peer_der: bytes | None = None
    error: str = ""


def client_context(
    ca_file: str | None,
    *,
    cert: PemFiles | None = None,
    check_hostname: bool = False,
    max_version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
    if max_version is not None:
        ctx.maximum_version = max_version
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def handshake(port: int, ctx: ssl.SSLContext, server_name: str = "") -> Outcome:
    """Connect with SNI `server_name` ('' sends none), read the answer, close."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=server_name
            )
            peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            try:
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()
    except (ssl.SSLError, ConnectionError) as e:
        return Outcome(False, error=f"{type(e).__name__}: {e}")
    if line != b"ok\n":
        return Outcome(False, peer, error=f"no answer: {line!r}")
    return Outcome(True, peer)
