"""Pool bookkeeping: limits, idle handling, release/abort, close; EndpointSpec; RoundRobin."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.errors import NoUpstreamAvailable, UpstreamConnectError
from gateway.upstream import ConnectionPool, EndpointSpec, RoundRobin
from tests.upstream.conftest import PoolFactory
from tests.upstream.servers import AppServer, fetch
from tests.upstream.test_faults import until


def gated_app(gate: asyncio.Event) -> web.Application:
    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="done")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 2_000_000)

    async def small(request: web.Request) -> web.Response:
        return web.Response(text="small")

    app = web.Application()
    app.router.add_get("/held", held)
    app.router.add_get("/big", big)
    app.router.add_get("/small", small)
    return app


async def get_text(pool: ConnectionPool, target: str = "/held", **kw: object) -> bytes:
    resp = await fetch(pool, target=target, **kw)  # type: ignore[arg-type]
    return await resp.read_all()


async def test_max_connections_is_honoured(make_pool: PoolFactory) -> None:
    gate = asyncio.Event()
    async with AppServer(gated_app(gate)) as server:
        pool = make_pool(server.port, max_connections=2)
        tasks = [asyncio.create_task(get_text(pool)) for _ in range(5)]
        await until(lambda: pool.waiting == 3 and server.connections == 2)
        assert pool.open == 2 and pool.in_flight == 2
        gate.set()
        assert await asyncio.gather(*tasks) == [b"done"] * 5
        assert server.connections == 2 and pool.connects == 2
        assert pool.open == 2 and pool.idle == 2 and pool.in_flight == 0


async def test_pool_exhausted_is_a_503_after_the_connect_timeout(make_pool: PoolFactory) -> None:
    gate = asyncio.Event()
    async with AppServer(gated_app(gate)) as server:
        pool = make_pool(server.port, max_connections=1)
        first = asyncio.create_task(get_text(pool))
        await until(lambda: server.connections == 1)
        with pytest.raises(UpstreamConnectError, match="pool exhausted") as err:
            await fetch(pool, target="/small", connect_timeout_s=0.05)
        assert err.value.status == 503
        assert pool.waiting == 0
        gate.set()
        assert await first == b"done"


async def test_cancelled_waiter_leaks_nothing(make_pool: PoolFactory) -> None:
    gate = asyncio.Event()
    async with AppServer(gated_app(gate)) as server:
        pool = make_pool(server.port, max_connections=1)
        first = asyncio.create_task(get_text(pool))
        await until(lambda: server.connections == 1)
        waiter = asyncio.create_task(get_text(pool, "/small"))
        await until(lambda: pool.waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.set()
        assert await first == b"done"
        assert await get_text(pool, "/small") == b"small"
        assert (pool.open, pool.idle, pool.in_flight, pool.waiting) == (1, 1, 0, 0)


async def test_max_idle_closes_the_surplus(make_pool: PoolFactory) -> None:
    gate = asyncio.Event()
    async with AppServer(gated_app(gate)) as server:
        pool = make_pool(server.port, max_idle=1)
        tasks = [asyncio.create_task(get_text(pool)) for _ in range(3)]
        await until(lambda: server.connections == 3)
        gate.set()
        await asyncio.gather(*tasks)
        assert (pool.open, pool.idle) == (1, 1)


async def test_idle_connections_expire(make_pool: PoolFactory) -> None:
    async with AppServer(gated_app(asyncio.Event())) as server:
        pool = make_pool(server.port, idle_timeout_s=0.02)
        assert await get_text(pool, "/small") == b"small"
        assert pool.idle == 1
        await until(lambda: pool.open == 0)
        assert pool.idle == 0
        assert await get_text(pool, "/small") == b"small"
        assert pool.connects == 2


@pytest.mark.parametrize("how", ["release", "abort"])
async def test_leaving_a_body_unread_closes_the_connection(
    make_pool: PoolFactory, how: str
) -> None:
    async with AppServer(gated_app(asyncio.Event())) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool, target="/big")
        assert await resp.read()
        getattr(resp, how)()
        getattr(resp, how)()  # idempotent
        assert (pool.open, pool.idle, pool.in_flight) == (0, 0, 0)
        assert "released" in repr(resp)
        assert await get_text(pool, "/small") == b"small"


async def test_release_of_a_complete_unread_body_keeps_the_connection(
    make_pool: PoolFactory,
) -> None:
    async with AppServer(gated_app(asyncio.Event())) as server:
        pool = make_pool(server.port)
        resp = await fetch(pool, target="/small")
        conn = resp.connection
        assert conn is not None
        await until(lambda: conn.complete)
        resp.release()
        assert (pool.open, pool.idle, pool.in_flight) == (1, 1, 0)
        assert await get_text(pool, "/small") == b"small"
        assert server.connections == 1


async def test_close_drops_idle_now_and_busy_on_release(make_pool: PoolFactory) -> None:
    async with AppServer(gated_app(asyncio.Event())) as server:
        pool = make_pool(server.port)
        await get_text(pool, "/small")
        busy = await fetch(pool, target="/small")
        await get_text(pool, "/small")
        assert (pool.open, pool.idle, pool.in_flight) == (2, 1, 1)
        await pool.close()
        assert (pool.open, pool.idle, pool.in_flight) == (1, 0, 1)
        assert await busy.read_all() == b"small"
        assert (pool.open, pool.idle, pool.in_flight) == (0, 0, 0)
        with pytest.raises(UpstreamConnectError, match="closed") as err:
            await fetch(pool)
        assert err.value.status == 503
        assert "closed" in repr(pool)


async def test_reprs_show_state(make_pool: PoolFactory) -> None:
    async with AppServer(gated_app(asyncio.Event())) as server:
        pool = make_pool(server.port, max_connections=7)
        resp = await fetch(pool, target="/big")
        assert repr(resp).startswith("<UpstreamResponse 200 'OK' open content_length=2000000")
        assert "<UpstreamConnection body exchanges=1 status=200" in repr(resp.connection)
        assert f"http://127.0.0.1:{server.port} open=1/7 idle=0 in_flight=1" in repr(pool)
        await resp.read_all()
        assert "ended" in repr(resp)
        assert "open=1/7 idle=1 in_flight=0 waiting=0 connects=1 retries=0>" in repr(pool)


@pytest.mark.parametrize(
    ("scheme", "host", "port", "key", "host_header"),
    [
        ("http", "example.com", 80, "http://example.com:80", "example.com"),
        ("http", "example.com", 8080, "http://example.com:8080", "example.com:8080"),
        ("https", "example.com", 443, "https://example.com:443", "example.com"),
        ("https", "example.com", 80, "https://example.com:80", "example.com:80"),
        ("http", "::1", 8080, "http://[::1]:8080", "[::1]:8080"),
    ],
    ids=["http-default", "http-port", "https-default", "https-port", "ipv6"],
)
def test_endpoint_spec_key_and_host_header(
    scheme: str, host: str, port: int, key: str, host_header: str
) -> None:
    spec = EndpointSpec(scheme, host, port)
    assert (spec.key, spec.host_header) == (key, host_header)
    assert (spec.max_connections, spec.max_idle, spec.idle_timeout_s) == (512, 64, 60.0)
    assert spec.tls_verify and spec.tls_ca_file is None and spec.tls_server_name is None


@pytest.mark.parametrize(
    "kw",
    [
        {"scheme": "ftp"},
        {"port": 0},
        {"port": 65536},
        {"max_connections": 0},
        {"max_idle": -1},
        {"idle_timeout_s": 0},
    ],
    ids=["scheme", "port-0", "port-high", "max-connections", "max-idle", "idle-timeout"],
)
def test_endpoint_spec_rejects_nonsense(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"scheme": "http", "host": "h", "port": 80, **kw}
    with pytest.raises(ValueError):
        EndpointSpec(**args)  # type: ignore[arg-type]


def rr_pools() -> list[ConnectionPool]:
    return [ConnectionPool(EndpointSpec("http", h, 80)) for h in ("a", "b", "c")]


def test_round_robin_order() -> None:
    rr = RoundRobin(rr_pools())
    assert [rr.pick().spec.host for _ in range(7)] == list("abcabca")
    assert repr(rr) == "<RoundRobin next=1 [http://a:80, http://b:80, http://c:80]>"


@pytest.mark.parametrize(
    ("exclude", "expected"),
    [
        ({"http://b:80"}, "acacac"),
        ({"http://a:80", "http://c:80"}, "bbbbbb"),
        ({"http://zzz:80"}, "abcabc"),
    ],
    ids=["skip-one", "only-one-left", "unknown-key"],
)
def test_round_robin_exclusion(exclude: set[str], expected: str) -> None:
    rr = RoundRobin(rr_pools())
    assert "".join(rr.pick(exclude).spec.host for _ in range(6)) == expected


def test_round_robin_all_excluded() -> None:
    rr = RoundRobin(rr_pools())
    with pytest.raises(NoUpstreamAvailable) as err:
        rr.pick({"http://a:80", "http://b:80", "http://c:80"})
    assert err.value.status == 503
    with pytest.raises(ValueError):
        RoundRobin([])
