"""The ban store against a real redis-server (two stores = two processes sharing it),
Redis down, and the admin API (list, lift) through aiohttp's test client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.admin.app import make_admin_app
from gateway.store.bans import BanStore, BansUnavailable
from tests.bans.conftest import ATTACK, BENIGN, Chain, FakeClock, config
from tests.redis_server import RedisServer

RULES = {"after_blocks": 2, "ban_for": "10s", "repeat_factor": 3, "max_ban": "1m"}


async def settled(store: BanStore | None) -> BanStore:
    """Wait for the store's background Redis writes (not a sleep: the tasks themselves)."""
    assert store is not None and store.redis is not None
    await asyncio.gather(*store.redis._sends)
    return store


@pytest.fixture
def prefix() -> str:
    return f"b{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def two(redis_server: RedisServer, prefix: str) -> AsyncIterator[tuple[Chain, Chain]]:
    """Two gateways' chains on their own fake clocks, sharing one Redis."""
    chains = [Chain(config(RULES, redis=redis_server.url, prefix=prefix), FakeClock())
              for _ in range(2)]  # fmt: skip
    yield chains[0], chains[1]
    for c in chains:
        assert c.store is not None
        await c.store.retire(None)


async def test_a_ban_is_shared_through_redis(two: tuple[Chain, Chain]) -> None:
    a, b = two
    assert await a.statuses([ATTACK, ATTACK, BENIGN]) == [403, 403, 403]
    sa, sb = await settled(a.store), b.store
    assert sb is not None and sb.redis is not None
    assert (await b.send(BENIGN)).status == 200  # not synced yet: the propagation delay
    await sb.redis.sync(sb.state)
    reply = await b.send(BENIGN)
    assert reply.status == 403 and reply.headers["Retry-After"] == "10"
    ban = sb.check("203.0.113.7")
    assert ban is not None and ban.shared and ban.count == 1
    assert ban.reason == "screening on route api"
    # A lift in B reaches A at A's next sync; the shared count restarts too.
    assert await sb.lift("203.0.113.7")
    assert (await b.send(BENIGN)).status == 200
    assert sa.redis is not None
    await sa.redis.sync(sa.state)
    assert (await a.send(BENIGN)).status == 200


async def test_repeat_count_is_shared(two: tuple[Chain, Chain]) -> None:
    a, b = two
    await a.statuses([ATTACK, ATTACK])
    sa = await settled(a.store)
    ban = sa.check("203.0.113.7")
    assert ban is not None and ban.count == 1
    # The ban ends (in Redis: its TTL; here: expire it by hand, no 10 s wait).
    assert sa.redis is not None
    client: Any = sa.redis.client
    await client.delete(f"{sa.redis.prefix}ban:203.0.113.7")
    # B, which never banned this client, bans it again: the second ban, 3x longer.
    await b.statuses([ATTACK, ATTACK])
    sb = await settled(b.store)
    ban = sb.check("203.0.113.7")
    assert ban is not None and ban.count == 2
    assert (await b.send(BENIGN)).headers["Retry-After"] == "30"


async def test_redis_down_bans_stay_local(
    redis_factory: Callable[[], RedisServer], prefix: str
) -> None:
    server = redis_factory()
    chain = Chain(config(RULES, redis=server.url, prefix=prefix), FakeClock())
    store = chain.store
    assert store is not None and store.redis is not None
    try:
        server.kill()
        assert await chain.statuses([ATTACK, ATTACK, BENIGN]) == [403, 403, 403]
        await settled(store)
        ban = store.check("203.0.113.7")
        assert ban is not None and not ban.shared  # enforced here only
        assert store.redis.errors == 1
        with pytest.raises(BansUnavailable):
            await store.listing()
    finally:
        await store.retire(None)


@pytest.fixture
async def admin() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def start(bans: Any) -> TestClient[Any, Any]:
        app = make_admin_app(lambda: {"ready": True}, bans=bans)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()


async def test_admin_lists_and_lifts(admin: Callable[..., Any], clock: FakeClock) -> None:
    chain = Chain(config(RULES), clock)
    await chain.statuses([ATTACK, ATTACK])
    clock.advance(4)
    client = await admin(lambda: chain.store)
    r = await client.get("/bans")
    assert r.status == 200
    (row,) = (await r.json())["bans"]
    assert row["ip"] == "203.0.113.7" and row["remaining_s"] == 6.0
    assert row["reason"] == "screening on route api" and row["count"] == 1
    assert row["shared"] is False and isinstance(row["until"], float)
    assert (await client.delete("/bans/203.0.113.8")).status == 404
    assert (await client.delete("/bans/not-an-ip")).status == 400
    r = await client.delete("/bans/203.0.113.7")
    assert r.status == 200 and await r.json() == {"lifted": "203.0.113.7"}
    assert (await chain.send(BENIGN)).status == 200
    assert (await (await client.get("/bans")).json()) == {"bans": []}


async def test_admin_through_redis(admin: Callable[..., Any], two: tuple[Chain, Chain]) -> None:
    a, b = two
    await a.statuses([ATTACK, ATTACK], ip="2001:db8::7")
    await settled(a.store)
    client = await admin(lambda: b.store)  # B never saw the client: Redis tells
    (row,) = (await (await client.get("/bans")).json())["bans"]
    assert row["ip"] == "2001:db8::7" and row["shared"] is True
    assert (await client.delete("/bans/2001:DB8:0::7")).status == 200  # normalised
    sa = a.store
    assert sa is not None and sa.redis is not None
    await sa.redis.sync(sa.state)
    assert (await a.send(BENIGN, ip="2001:db8::7")).status == 200


# (id, bans callable given to the app, status)
UNAVAILABLE = [("multi-worker-no-redis", None, 501), ("not-configured", lambda: None, 404)]


@pytest.mark.parametrize(("bans", "status"), [c[1:] for c in UNAVAILABLE],
                         ids=[c[0] for c in UNAVAILABLE])  # fmt: skip
async def test_admin_without_bans(admin: Callable[..., Any], bans: Any, status: int) -> None:
    client = await admin(bans)
    assert (await client.get("/bans")).status == status
    assert (await client.delete("/bans/127.0.0.1")).status == status
