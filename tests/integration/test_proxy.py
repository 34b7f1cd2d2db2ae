"""The proxy end to end: real upstream servers, a real gateway, a real HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.support import free_port, gateway_config


def cfg(upstream_port: int, routes: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{upstream_port}"], **kw.pop("upstreams", {})},
        routes=routes,
        **kw,
    )


def route(name: str, match: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "match": match or {}, "upstream": kw.pop("upstream", "up"), **kw}


async def get_json(url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.request(kw.pop("method", "GET"), url, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, r.headers, body


ROUTING_CASES = [
    # (id, routes, request kwargs, expected route name or None for 404)
    (
        "host-exact",
        [route("a", {"hosts": ["api.test"]}), route("b")],
        {"path": "/x", "headers": {"Host": "api.test"}},
        "a",
    ),
    (
        "host-exact-miss-falls-to-any",
        [route("a", {"hosts": ["api.test"]}), route("b")],
        {"path": "/x", "headers": {"Host": "other.test"}},
        "b",
    ),
    (
        "host-wildcard",
        [route("w", {"hosts": ["*.test"]}), route("b")],
        {"path": "/x", "headers": {"Host": "deep.api.test:8080"}},
        "w",
    ),
    (
        "host-wildcard-not-apex",
        [route("w", {"hosts": ["*.test"]})],
        {"path": "/x", "headers": {"Host": "test"}},
        None,
    ),
    (
        "host-exact-beats-wildcard-and-order",
        [route("w", {"hosts": ["*.test"]}), route("e", {"hosts": ["api.test"]})],
        {"path": "/x", "headers": {"Host": "api.test"}},
        "e",
    ),
    ("path-exact", [route("e", {"path": {"exact": "/a"}})], {"path": "/a"}, "e"),
    ("path-exact-miss", [route("e", {"path": {"exact": "/a"}})], {"path": "/a/b"}, None),
    ("path-prefix", [route("p", {"path": {"prefix": "/api"}})], {"path": "/api/v1"}, "p"),
    ("path-prefix-itself", [route("p", {"path": {"prefix": "/api"}})], {"path": "/api"}, "p"),
    ("path-prefix-boundary", [route("p", {"path": {"prefix": "/api"}})], {"path": "/apix"}, None),
    (
        "path-regex",
        [route("r", {"path": {"regex": "^/v[0-9]+/items$"}})],
        {"path": "/v2/items"},
        "r",
    ),
    ("path-regex-miss", [route("r", {"path": {"regex": "^/v[0-9]+$"}})], {"path": "/vx"}, None),
    (
        "method",
        [route("m", {"methods": ["POST"]}), route("b")],
        {"path": "/", "method": "POST"},
        "m",
    ),
    ("method-miss", [route("m", {"methods": ["POST"]})], {"path": "/", "method": "GET"}, None),
    (
        "header-value",
        [route("h", {"headers": [{"name": "X-Env", "value": "canary"}]}), route("b")],
        {"path": "/", "headers": {"X-Env": "canary"}},
        "h",
    ),
    (
        "header-regex",
        [route("h", {"headers": [{"name": "X-Env", "regex": "^can"}]}), route("b")],
        {"path": "/", "headers": {"X-Env": "canary-2"}},
        "h",
    ),
    (
        "header-absent",
        [route("h", {"headers": [{"name": "X-Env", "present": False}]}), route("b")],
        {"path": "/", "headers": {"X-Env": "x"}},
        "b",
    ),
    (
        "config-order-first-wins",
        [route("one", {"path": {"prefix": "/"}}), route("two", {"path": {"prefix": "/a"}})],
        {"path": "/a"},
        "one",
    ),
]


@pytest.mark.parametrize(
    ("routes", "req", "expected"),
    [c[1:] for c in ROUTING_CASES],
    ids=[c[0] for c in ROUTING_CASES],
)
async def test_routing_match_kinds(
    gateway: GatewayFactory,
    upstream: int,
    routes: list[dict[str, Any]],
    req: dict[str, Any],
    expected: str | None,
) -> None:
    # Each route points at its own upstream name so the answer tells which matched.
    ups = {r["name"]: [f"http://127.0.0.1:{upstream}"] for r in routes}
    for r in routes:
        r["upstream"] = r["name"]
    gw = await gateway(cfg(upstream, routes, upstreams=ups))
    req = dict(req)
    path = req.pop("path")
    status, headers, body = await get_json(gw.url + path, **req)
    if expected is None:
        assert status == 404
        assert body["error"] == "no_route"
        assert body["request_id"] == headers["X-Request-ID"]
    else:
        assert status == 200, body
        # The route is visible through the Host we forwarded and the path it saw.
        assert body["path"] == path


async def test_route_picks_named_upstream(gateway: GatewayFactory, upstream: int) -> None:
    from tests.support import serve_app, upstream_app

    async with serve_app(upstream_app("other")) as other:
        gw = await gateway(
            cfg(
                upstream,
                [route("o", {"path": {"prefix": "/o"}}, upstream="other"), route("d")],
                upstreams={"other": [f"http://127.0.0.1:{other}"]},
            )
        )
        assert (await get_json(gw.url + "/o/1"))[2]["upstream"] == "other"
        assert (await get_json(gw.url + "/x"))[2]["upstream"] == "up"


@pytest.mark.parametrize(
    ("rewrite", "path", "seen"),
    [
        ({"strip_prefix": True}, "/api/users/1?q=1", "/users/1?q=1"),
        ({"strip_prefix": True}, "/api", "/"),
        ({"prefix": "/v2"}, "/api/users", "/v2/users"),
        ({"regex": "^/api/(\\w+)", "replacement": "/svc/\\1"}, "/api/users/1", "/svc/users/1"),
    ],
    ids=["strip", "strip-to-root", "replace-prefix", "regex"],
)
async def test_rewrite(
    gateway: GatewayFactory, upstream: int, rewrite: dict[str, Any], path: str, seen: str
) -> None:
    r = route("r", {"path": {"prefix": "/api"}}, rewrite=rewrite)
    gw = await gateway(cfg(upstream, [r]))
    status, _, body = await get_json(gw.url + path)
    assert status == 200
    assert body["path"] == seen


FORGED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Real-IP": "203.0.113.9",
    "Client-Cert": ":Zm9yZ2Vk:",
    "X-Client-Cert-Subject": "CN=admin",
    "X-Request-ID": "forged-id",
    "Host": "api.test",
}


async def test_untrusted_client_forged_headers_are_rebuilt(
    gateway: GatewayFactory, upstream: int
) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))  # trusted_proxies: none
    status, headers, body = await get_json(gw.url + "/x", headers=FORGED)
    assert status == 200
    seen = dict(body["headers"])
    assert seen["X-Forwarded-For"] == "127.0.0.1"  # replaced, not appended
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "api.test"
    assert seen["Forwarded"] == f'for=127.0.0.1;by="127.0.0.1:{gw.port}";proto=http;host=api.test'
    for gone in ("X-Real-IP", "Client-Cert", "X-Client-Cert-Subject"):
        assert gone not in seen
    assert seen["Via"] == "1.1 gateway"
    assert seen["Host"] == "api.test"  # preserved by default
    rid = seen["X-Request-ID"]
    assert rid != "forged-id" and len(rid) == 32
    assert headers["X-Request-ID"] == rid  # returned to the client
    assert "1.1 gateway" in headers["Via"]


async def test_trusted_proxy_headers_are_appended(gateway: GatewayFactory, upstream: int) -> None:
    config = cfg(upstream, [route("all")])
    config["trusted_proxies"] = ["127.0.0.0/8"]
    gw = await gateway(config)
    status, headers, body = await get_json(
        gw.url + "/x", headers={**FORGED, "X-Forwarded-For": "198.51.100.7, 127.0.0.2"}
    )
    assert status == 200
    seen = dict(body["headers"])
    assert seen["X-Forwarded-For"] == "198.51.100.7, 127.0.0.2, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "https"  # the TLS-terminating proxy's word
    assert seen["Forwarded"].startswith("for=203.0.113.9;proto=https, for=127.0.0.1;")
    assert seen["X-Request-ID"] == "forged-id" == headers["X-Request-ID"]
    assert seen["X-Real-IP"] == "203.0.113.9"


@pytest.mark.parametrize(
    ("trusted", "xff", "client"),
    [
        ([], ["198.51.100.7"], "127.0.0.1"),
        (["127.0.0.1"], ["198.51.100.7"], "198.51.100.7"),
        (["127.0.0.1", "10.0.0.0/8"], ["198.51.100.7, 10.1.1.1"], "198.51.100.7"),
        (["127.0.0.1", "10.0.0.0/8"], ["6.6.6.6, 198.51.100.7, 10.1.1.1"], "198.51.100.7"),
        (["127.0.0.1"], ["junk, 198.51.100.7"], "198.51.100.7"),
        (["127.0.0.1"], ["198.51.100.7, junk"], "127.0.0.1"),
        (["127.0.0.1"], ["10.0.0.1", "198.51.100.7"], "198.51.100.7"),
        (["127.0.0.0/8"], ["127.0.0.5"], "127.0.0.5"),
    ],
    ids=[
        "untrusted-peer",
        "one-trusted-hop",
        "chain-of-trusted",
        "spoofed-left-ignored",
        "junk-left-ignored",
        "junk-hop-stops-walk",
        "repeated-header",
        "all-trusted-leftmost",
    ],
)
def test_client_address_resolution(trusted: list[str], xff: list[str], client: str) -> None:
    import ipaddress

    from gateway.forwarded import TrustedProxies

    proxies = TrustedProxies([ipaddress.ip_network(t) for t in trusted])
    assert proxies.resolve("127.0.0.1", xff)[0] == client


async def test_preserve_host_off_sends_endpoint_host(
    gateway: GatewayFactory, upstream: int
) -> None:
    gw = await gateway(cfg(upstream, [route("all", preserve_host=False)]))
    _, _, body = await get_json(gw.url + "/x", headers={"Host": "api.test"})
    assert dict(body["headers"])["Host"] == f"127.0.0.1:{upstream}"


async def test_hop_by_hop_stripped_both_ways(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    _, _, body = await get_json(
        gw.url + "/x",
        headers={
            "Connection": "keep-alive, X-Client-Secret",
            "X-Client-Secret": "s3cret",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9v",
            "TE": "trailers",
            "X-Normal": "kept",
        },
    )
    seen = {k.lower() for k, _ in body["headers"]}
    for gone in ("x-client-secret", "keep-alive", "proxy-authorization", "te"):
        assert gone not in seen, gone
    assert dict(body["headers"])["X-Normal"] == "kept"
    assert dict(body["headers"]).get("Connection", "keep-alive").lower() == "keep-alive"

    status, headers, _ = await get_json(gw.url + "/hop")
    assert status == 200
    assert "X-Upstream-Secret" not in headers
    assert "Keep-Alive" not in headers
    assert "Proxy-Authenticate" not in headers
    assert headers["X-Kept"] == "yes"


async def test_chunked_upstream_response(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/chunked?n=20") as r:
        assert r.status == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        body = await r.read()
    assert body == b"".join(f"chunk-{i};".encode() for i in range(20))


async def test_post_bodies_content_length_and_chunked(
    gateway: GatewayFactory, upstream: int
) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    data = bytes(range(256)) * 4096  # 1 MiB

    async def gen() -> Any:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/upload", data=data) as r:
            assert (await r.json())["body_bytes"] == len(data)
        async with s.post(gw.url + "/upload", data=gen()) as r:
            assert (await r.json())["body_bytes"] == len(data)


async def test_head_and_204(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    async with aiohttp.ClientSession() as s:
        async with s.head(gw.url + "/bytes/1000") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == "1000"
            assert await r.read() == b""
        async with s.get(gw.url + "/status/204") as r:
            assert r.status == 204
            assert await r.read() == b""


async def test_expect_100_continue(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line == b"HTTP/1.1 100 Continue\r\n"
    assert await reader.readline() == b"\r\n"
    writer.write(b"hello")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_upstream_down_gives_502_within_connect_timeout(gateway: GatewayFactory) -> None:
    dead = free_port()
    gw = await gateway(cfg(dead, [route("all", timeouts={"connect": "500ms"})]))
    t0 = time.monotonic()
    status, _, body = await get_json(gw.url + "/x")
    assert status == 502
    assert body["error"] == "upstream_connect_failed"
    assert time.monotonic() - t0 < 1.5


async def test_unanswered_connect_gives_502_at_connect_timeout(gateway: GatewayFactory) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so the
    # gateway's connect hangs until its connect timeout ends it. Loopback only.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    try:
        gw = await gateway(cfg(port, [route("all", timeouts={"connect": "300ms"})]))
        t0 = time.monotonic()
        status, _, body = await get_json(gw.url + "/x")
        assert status == 502
        assert "connect" in body["message"]
        assert 0.25 < time.monotonic() - t0 < 1.5
    finally:
        for c in fillers:
            c.close()
        blackhole.close()


async def test_slow_upstream_gives_504(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all", timeouts={"read": "200ms"})]))
    t0 = time.monotonic()
    status, _, body = await get_json(gw.url + "/slow?delay=2")
    assert status == 504
    assert body["error"] == "upstream_timeout"
    assert time.monotonic() - t0 < 1.5


async def test_failed_endpoint_falls_through_to_next(
    gateway: GatewayFactory, upstream: int
) -> None:
    config = cfg(upstream, [route("all")])
    config["upstreams"]["up"]["endpoints"] = [
        f"http://127.0.0.1:{free_port()}",
        f"http://127.0.0.1:{upstream}",
    ]
    gw = await gateway(config)
    for _ in range(4):  # round robin lands on the dead one half the time
        status, _, _ = await get_json(gw.url + "/x", method="POST", data=b"abc")
        assert status == 200


async def test_upstream_closing_keepalive_is_invisible(gateway: GatewayFactory) -> None:
    """An upstream that closes each keep-alive connection right after answering
    (without saying Connection: close) must not cost the client a single error."""
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()
            return
        requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.close()  # closed without announcing it

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(cfg(port, [route("all")]))
        async with aiohttp.ClientSession() as s:
            for _ in range(30):
                async with s.get(gw.url + "/x") as r:
                    assert r.status == 200
                    assert await r.read() == b"ok"
                await asyncio.sleep(0.02)  # let the upstream's close land in the pool
    finally:
        server.close()
    assert requests == 30


async def test_websocket_echo(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    async with aiohttp.ClientSession() as s, s.ws_connect(gw.url + "/ws") as ws:
        for i in range(5):
            await ws.send_str(f"hello {i}")
            assert (await ws.receive_str(timeout=5)) == f"echo:hello {i}"
        await ws.send_bytes(b"\x00\x01" * 50_000)
        assert (await ws.receive_bytes(timeout=5)) == b"\x00\x01" * 50_000


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
            + b"\r\n",
            431,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: " % i + b"v" * 7000 + b"\r\n" for i in range(6))
            + b"\r\n",
            431,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    ],
    ids=["long-uri-414", "long-header-431", "many-headers-431", "headers-total-431", "garbage-400"],
)
async def test_oversized_and_bad_requests(
    gateway: GatewayFactory, upstream: int, request_bytes: bytes, status: int
) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request_bytes)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert re.match(rb"HTTP/1\.[01] %d " % status, line), line
    # The worker is unharmed: the next client is served.
    assert (await get_json(gw.url + "/x"))[0] == 200


async def test_slow_headers_are_cut_off(gateway: GatewayFactory, upstream: int) -> None:
    gw = await gateway(cfg(upstream, [route("all")], server={"header_timeout": "300ms"}))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
    await writer.drain()
    t0 = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
    assert time.monotonic() - t0 < 2
    writer.close()
    # A keep-alive connection that starts a second head and stalls is cut too.
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"GET /x HTTP/1.1\r\nHo")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # rest of the 1st body, then EOF
    assert b"HTTP/1.1" not in data
    writer.close()


def gateway_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records of the gateway itself (the test upstream may complain freely)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("gateway") and r.levelno >= logging.ERROR
    ]


async def _pools_settle(gw: Any) -> list[Any]:
    pools = list(gw.worker.runtime.pools.values())
    for _ in range(100):
        if all(p.in_flight == 0 for p in pools):
            break
        await asyncio.sleep(0.02)
    return pools


async def test_client_gone_mid_upload_leaks_nothing(
    gateway: GatewayFactory, upstream: int, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    _reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    writer.write(b"a" * 100_000)
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    pools = await _pools_settle(gw)
    assert [p.in_flight for p in pools] == [0]
    assert gateway_errors(caplog) == []
    assert (await get_json(gw.url + "/x"))[0] == 200  # the worker serves on


async def test_client_gone_mid_download_leaks_nothing(
    gateway: GatewayFactory, upstream: int, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway(cfg(upstream, [route("all")]))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /bytes/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.readexactly(1_000_000)
    writer.transport.abort()
    pools = await _pools_settle(gw)
    assert [p.in_flight for p in pools] == [0]
    assert gateway_errors(caplog) == []
    assert (await get_json(gw.url + "/x"))[0] == 200


async def test_upstream_cut_mid_body_cuts_the_client(gateway: GatewayFactory) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000)
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(cfg(port, [route("all")]))
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/x") as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()  # truncated: never passed off as complete
    finally:
        server.close()


async def test_no_invented_server_or_content_type(gateway: GatewayFactory) -> None:
    """What aiohttp would add on its own (Server, a default Content-Type) is not sent."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"y" * 100_000  # over the small-body size: the streamed path
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(cfg(port, [route("all")]))
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url + "/x") as r:
                assert r.status == 200
                assert "Server" not in r.headers
                assert "Content-Type" not in r.headers
                await r.read()
            async with s.get(gw.url + "/x", headers={"Connection": "close"}) as r:
                assert "Server" not in r.headers
    finally:
        server.close()


async def test_response_rule_removes_upstream_server(
    gateway: GatewayFactory, upstream: int
) -> None:
    gw = await gateway(cfg(upstream, [route("all", headers={"response": {"remove": ["Server"]}})]))
    for extra in ({}, {"Connection": "close"}):
        status, headers, _ = await get_json(gw.url + "/x", headers=extra)
        assert status == 200
        assert "Server" not in headers
