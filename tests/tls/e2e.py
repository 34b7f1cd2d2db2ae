"""Helpers for end-to-end TLS tests through a running gateway.

`https_request()` is a real TLS client with full control of SNI: it connects with
`asyncio.open_connection(ssl=..., server_hostname=...)`, sends one HTTP/1.1 request,
and returns the answer together with the certificate the server presented. A
connection the server refuses (a TLS alert, a reset, a close before any answer) comes
back as `Refused` with the error text, never as an exception: in TLS 1.3 the client
finishes its side of the handshake before the server has judged the client
certificate, so a rejection surfaces on the first read, not on connect. A hang is
not a refusal: it raises TimeoutError.

`serve_tls_app()` runs an aiohttp app with TLS on loopback (an https upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.tls.certs import PemFiles

TIMEOUT_S = 5.0


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    peer_der: bytes | None  # the certificate the server presented, DER

    def json(self) -> Any:
        return json.loads(self.body)

    def upstream_headers(self) -> CIMultiDict[str]:
        """What the echo upstream (tests.support.upstream_app) received."""
        return CIMultiDict((k, v) for k, v in self.json()["headers"])


@dataclass
class Refused:
    error: str


def client_context(
    ca_file: str | None = None,
    *,
    cert: PemFiles | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context trusting `ca_file` (only), presenting `cert` if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        ctx.load_verify_locations(ca_file)
    if cert is not None:
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, CIMultiDict[str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.add(k.strip(), v.strip())
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    else:
        body = await reader.read()
    return status, headers, body


async def https_request(
    port: int,
    ctx: ssl.SSLContext,
    path: str = "/",
    *,
    sni: str = "localhost",
    host: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Answer | Refused:
    """GET `path` over TLS with SNI `sni` ('' sends none), Connection: close."""
    head = [f"GET {path} HTTP/1.1", f"Host: {host or sni or '127.0.0.1'}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    async with asyncio.timeout(TIMEOUT_S):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=sni
            )
        except (ssl.SSLError, ConnectionError) as e:
            return Refused(f"on connect: {type(e).__name__}: {e}")
        try:
            peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(request)
            await writer.drain()
            status, answer_headers, body = await _read_response(reader)
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as e:
            return Refused(f"on first exchange: {type(e).__name__}: {e}")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
    return Answer(status, answer_headers, body, peer)


async def ok(port: int, ctx: ssl.SSLContext, path: str = "/", **kw: Any) -> Answer:
    """https_request that must get an answer (fails the test with the error otherwise)."""
    answer = await https_request(port, ctx, path, **kw)
    assert isinstance(answer, Answer), answer.error
    return answer


@contextlib.asynccontextmanager
async def serve_tls_app(app: web.Application, ctx: ssl.SSLContext) -> AsyncIterator[int]:
    """Serve `app` over TLS on 127.0.0.1; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield port
    finally:
        await runner.cleanup()
