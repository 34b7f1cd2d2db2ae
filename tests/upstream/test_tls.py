"""https upstreams with real certificates made by `cryptography` (conftest.certs)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway.errors import UpstreamConnectError, UpstreamError
from gateway.upstream import HIGH_WATER, ConnectionPool, EndpointSpec
from tests.upstream.conftest import Certs, PoolFactory
from tests.upstream.servers import RawServer, Request, fetch, keepalive, read_request
from tests.upstream.test_faults import READ_SIZE, until


def server_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.cert_file, certs.key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_server(certs: Certs) -> RawServer:
    alpn: list[str | None] = []

    def respond(req: Request) -> bytes:
        body = b"secure " + req.target.encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    handler = keepalive(respond)

    async def serve(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        alpn.append(w.get_extra_info("ssl_object").selected_alpn_protocol())
        await handler(i, reader, w)

    server = RawServer(serve, server_context(certs))
    server.alpn = alpn  # type: ignore[attr-defined]
    return server


@pytest.mark.parametrize(
    ("case", "server_name"),
    [("ip-address", None), ("server-name-override", "localhost")],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_verified_tls_with_the_ca_file(
    make_pool: PoolFactory, certs: Certs, case: str, server_name: str | None
) -> None:
    async with tls_server(certs) as server:
        pool = make_pool(
            server.port, "https", tls_ca_file=str(certs.ca_file), tls_server_name=server_name
        )
        for path in ("/one", "/two"):
            assert await (await fetch(pool, target=path)).read_all() == b"secure " + path.encode()
        assert server.connections == 1  # keep-alive over TLS
        assert server.alpn == ["http/1.1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("case", "kw"),
    [
        ("unknown-ca", {}),
        ("wrong-name", {"tls_server_name": "other.example"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_verification_failure_is_a_connect_error(
    make_pool: PoolFactory, certs: Certs, case: str, kw: dict[str, str]
) -> None:
    if case == "wrong-name":
        kw = {**kw, "tls_ca_file": str(certs.ca_file)}
    async with tls_server(certs) as server:
        pool = make_pool(server.port, "https", **kw)
        with pytest.raises(UpstreamConnectError, match="certificate verification failed") as err:
            await fetch(pool)
        assert err.value.status == 502
        assert pool.open == 0 and pool.in_flight == 0


async def test_verification_off_accepts_any_certificate(
    make_pool: PoolFactory, certs: Certs
) -> None:
    async with tls_server(certs) as server:
        pool = make_pool(server.port, "https", tls_verify=False)
        assert await (await fetch(pool, target="/x")).read_all() == b"secure /x"


async def test_plain_http_to_a_tls_port_is_a_protocol_error(
    make_pool: PoolFactory, certs: Certs
) -> None:
    async with tls_server(certs) as server:
        pool = make_pool(server.port, "http")
        with pytest.raises(UpstreamError) as err:  # closed or garbage: both a 502
            await fetch(pool)
        assert err.value.status == 502


async def test_large_body_over_tls_is_bounded(make_pool: PoolFactory, certs: Certs) -> None:
    size = 8 * 1024 * 1024

    async def handler(i: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            w.write(b"y" * 65536)
            await w.drain()
        await reader.read()

    async with RawServer(handler, server_context(certs)) as server:
        pool = make_pool(server.port, "https", tls_ca_file=str(certs.ca_file))
        resp = await fetch(pool)
        conn = resp.connection
        assert conn is not None
        await until(lambda: conn.reading_paused)
        total = 0
        while chunk := await resp.read():
            total += len(chunk)
        assert total == size
        assert conn.peak_buffered <= HIGH_WATER + READ_SIZE


def test_missing_ca_file_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="tls_ca_file"):
        ConnectionPool(EndpointSpec("https", "h", 443, tls_ca_file="/nonexistent/ca.pem"))
