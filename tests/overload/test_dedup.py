"""Deduplication: the memory store on a fake clock, the JSON key, the filter end to end in
an in-process gateway, and two gateway processes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.filters.dedup import json_value
from gateway.store.dedup import CLAIMED, DONE, PENDING, MemoryDedup, Stored
from tests.overload.conftest import Counting, FakeClock, base_config
from tests.redis_server import RedisServer
from tests.support import GatewayProcess, free_port, write_config

# -- the memory store ----------------------------------------------------------------------


async def test_memory_store_lifecycle(clock: FakeClock) -> None:
    store = MemoryDedup(clock)
    first = await store.claim("k", "fp1", lease_s=30)
    assert first.kind == CLAIMED
    again = await store.claim("k", "fp1", lease_s=30)
    assert (again.kind, again.fingerprint) == (PENDING, "fp1")
    store.complete_soon("k", "not-the-token", Stored(200, "OK", [], b"x"), 60)
    assert (await store.claim("k", "fp1", 30)).kind == PENDING  # a stranger cannot complete
    store.complete_soon("k", first.token, Stored(201, "Created", [("A", "1")], b"body"), 60)
    done = await store.claim("k", "fp2", 30)
    assert done.kind == DONE and done.fingerprint == "fp1"
    assert done.stored is not None and (done.stored.status, done.stored.body) == (201, b"body")
    clock.advance(59.9)
    assert (await store.claim("k", "fp1", 30)).kind == DONE
    clock.advance(0.2)  # the window is over
    assert (await store.claim("k", "fp1", 30)).kind == CLAIMED


async def test_memory_store_lease_release_and_wait(clock: FakeClock) -> None:
    store = MemoryDedup(clock)
    c = await store.claim("k", "fp", lease_s=5)
    waiter = asyncio.create_task(store.wait("k", 10.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    store.release_soon("k", c.token)
    await waiter  # woken by the release
    assert (await store.claim("k", "fp", 5)).kind == CLAIMED
    clock.advance(5.0)  # a holder that never came back: its lease ends
    assert (await store.claim("k", "fp", 5)).kind == CLAIMED


async def test_memory_store_is_bounded_in_bytes(clock: FakeClock) -> None:
    store = MemoryDedup(clock, max_bytes=1000)
    for i in range(10):
        c = await store.claim(f"k{i}", "fp", 5)
        store.complete_soon(f"k{i}", c.token, Stored(200, "", [], b"x" * 300), 60)
    assert store.bytes <= 1000 and len(store) <= 3
    assert (await store.claim("k9", "fp", 5)).kind == DONE  # the newest are kept
    assert (await store.claim("k0", "fp", 5)).kind == CLAIMED


def test_stored_round_trip() -> None:
    s = Stored(200, "OK", [("Content-Type", "a\nb"), ("X", "é")], b"\n\x00body\n")
    back = Stored.decode(s.encode())
    assert (back.status, back.reason, back.headers, back.body) == (
        200, "OK", s.headers, s.body)  # fmt: skip


JSON_CASES = [
    ("top-level", b'{"id": "m1"}', ("id",), "m1"),
    ("nested", b'{"data": {"message_id": 42}}', ("data", "message_id"), "42"),
    ("list-index", b'{"a": [{"id": "x"}, {"id": "y"}]}', ("a", 1, "id"), "y"),
    ("object-value", b'{"k": {"b": 1, "a": 2}}', ("k",), '{"a":2,"b":1}'),
    ("missing", b'{"id": "m1"}', ("other",), None),
    ("null", b'{"id": null}', ("id",), None),
    ("empty-string", b'{"id": ""}', ("id",), None),
    ("not-json", b"id=m1", ("id",), None),
    ("index-out-of-range", b'{"a": []}', ("a", 0), None),
    ("name-on-a-list", b"[1, 2]", ("a",), None),
]


@pytest.mark.parametrize(("body", "steps", "want"), [c[1:] for c in JSON_CASES],
                         ids=[c[0] for c in JSON_CASES])  # fmt: skip
def test_json_key(body: bytes, steps: tuple[str | int, ...], want: str | None) -> None:
    assert json_value(body, steps) == want


# -- the filter, in an in-process gateway --------------------------------------------------


async def post(
    s: aiohttp.ClientSession, url: str, body: bytes, key: str | None = "k1", **kw: Any
) -> tuple[int, bytes, Any]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    headers.update(kw.pop("headers", {}))
    async with s.post(url, data=body, headers=headers, **kw) as r:
        return r.status, await r.read(), r.headers


def dedup_config(counting: Counting, **dedup: Any) -> dict[str, Any]:
    route = {"name": "hooks", "dedup": {"window": "60s", **dedup}}
    return base_config(counting.url, [route])


async def start(worker_on: Any, cfg: dict[str, Any]) -> str:
    gw = await worker_on(cfg, fake_clock=True)
    return f"http://127.0.0.1:{gw.bound[0][1]}/hook"


async def test_repeat_is_replayed_and_window_expires_on_the_clock(
    counting: Counting, worker_on: Any, clock: FakeClock
) -> None:
    url = await start(worker_on, dedup_config(counting))
    async with aiohttp.ClientSession() as s:
        st1, body1, h1 = await post(s, url, b'{"a": 1}')
        st2, body2, h2 = await post(s, url, b'{"a": 1}')
        assert (st1, st2) == (201, 201) and body1 == body2 and b'"hit": 1' in body1
        assert "Idempotent-Replayed" not in h1 and h2["Idempotent-Replayed"] == "true"
        assert h2["Content-Type"] == h1["Content-Type"]
        assert counting.hits == 1
        clock.advance(59.0)
        assert (await post(s, url, b'{"a": 1}'))[0] == 201 and counting.hits == 1
        clock.advance(1.5)  # past the 60 s window
        _, body3, h3 = await post(s, url, b'{"a": 1}')
        assert b'"hit": 2' in body3 and "Idempotent-Replayed" not in h3
        assert counting.hits == 2


# (id, dedup settings, upstream status, upstream size, second request body, want second
#  status, upstream hits after both)
CASES = [
    ("different-body-is-422", {}, 201, 0, b'{"a": 2}', 422, 1),
    ("5xx-not-stored", {}, 503, 0, b'{"a": 1}', 503, 2),
    ("429-not-stored", {}, 429, 0, b'{"a": 1}', 429, 2),
    ("4xx-stored", {}, 404, 0, b'{"a": 1}', 404, 1),
    ("large-response-not-stored", {"max_body_bytes": 100}, 201, 5000, b'{"a": 1}', 201, 2),
    ("streamed-within-limit-stored", {"max_body_bytes": 200_000}, 201, 100_000, b'{"a": 1}',
     201, 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dedup", "status", "size", "second", "want", "hits"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_outcomes(
    counting: Counting,
    worker_on: Any,
    dedup: dict[str, Any],
    status: int,
    size: int,
    second: bytes,
    want: int,
    hits: int,
) -> None:
    counting.status, counting.size = status, size
    url = await start(worker_on, dedup_config(counting, **dedup))
    async with aiohttp.ClientSession() as s:
        assert (await post(s, url, b'{"a": 1}'))[0] == status
        st, body, _ = await post(s, url, second)
        assert st == want, body
        assert counting.hits == hits
        if want == 422:
            assert b"idempotency_key_mismatch" in body


async def test_no_key_and_other_methods_pass(counting: Counting, worker_on: Any) -> None:
    url = await start(worker_on, dedup_config(counting))
    async with aiohttp.ClientSession() as s:
        await post(s, url, b"x", key=None)
        await post(s, url, b"x", key=None)
        for _ in range(2):
            async with s.get(url, headers={"Idempotency-Key": "k1"}) as r:
                await r.read()
    assert counting.hits == 4


async def test_json_body_key(counting: Counting, worker_on: Any) -> None:
    cfg = dedup_config(counting, key={"json": "$.data.message_id"})
    url = await start(worker_on, cfg)
    msg = b'{"data": {"message_id": "m-1", "n": 1}}'
    async with aiohttp.ClientSession() as s:
        assert (await post(s, url, msg, key=None))[0] == 201
        st, _, h = await post(s, url, msg, key=None)
        assert st == 201 and h["Idempotent-Replayed"] == "true"
        other = b'{"data": {"message_id": "m-1", "n": 2}}'
        assert (await post(s, url, other, key=None))[0] == 422
        assert (await post(s, url, b'{"data": {}}', key=None))[0] == 201  # no key: passes
    assert counting.hits == 2


async def test_replay_is_encoded_for_the_client_asking(counting: Counting, worker_on: Any) -> None:
    # Dedup runs inside compression: the stored answer is the upstream's own bytes, so a
    # replay to a client without gzip is not handed the first client's gzip body.
    counting.size = 4000
    route = {"name": "hooks", "dedup": {"window": "60s"}, "compression": {"min_size": 100}}
    url = await start(worker_on, base_config(counting.url, [route]))
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        st1, body1, h1 = await post(s, url, b"{}", headers={"Accept-Encoding": "gzip"})
        st2, body2, h2 = await post(s, url, b"{}", headers={"Accept-Encoding": "identity"})
    assert (st1, st2) == (201, 201) and counting.hits == 1
    assert h1.get("Content-Encoding") == "gzip" and "Content-Encoding" not in h2
    assert h2["Idempotent-Replayed"] == "true" and body2.startswith(b'{"hit": 1')
    assert gzip.decompress(body1) == body2


async def test_request_body_over_the_limit_is_413(counting: Counting, worker_on: Any) -> None:
    url = await start(worker_on, dedup_config(counting, max_request_bytes=10))
    async with aiohttp.ClientSession() as s:
        st, _, _ = await post(s, url, b"x" * 11)
        assert st == 413 and counting.hits == 0


@pytest.mark.parametrize("mode", ["wait", "conflict"])
async def test_repeat_while_in_flight(counting: Counting, worker_on: Any, mode: str) -> None:
    counting.gate = asyncio.Event()
    gw = await worker_on(dedup_config(counting, on_in_flight=mode), fake_clock=True)
    url = f"http://127.0.0.1:{gw.bound[0][1]}/hook"
    async with aiohttp.ClientSession() as s:
        first = asyncio.create_task(post(s, url, b"{}"))
        await counting.arrived.wait()  # the first is at the upstream, held there
        second = asyncio.create_task(post(s, url, b"{}"))
        if mode == "conflict":
            st, body, _ = await second
            assert st == 409 and b"idempotency_key_in_use" in body
            counting.gate.set()
            assert (await first)[0] == 201
        else:
            store = gw.runtime.dedup.memory
            for _ in range(500):  # the repeat travels to the gateway and starts waiting
                if store.waiting:
                    break
                await asyncio.sleep(0.01)
            assert store.waiting == 1 and not second.done()
            counting.gate.set()
            (st1, b1, _), (st2, b2, h2) = await asyncio.gather(first, second)
            assert st1 == st2 == 201 and b1 == b2 and h2["Idempotent-Replayed"] == "true"
    assert counting.hits == 1


# -- two gateway processes, one redis-server -----------------------------------------------


async def test_two_gateways_share_keys_through_redis(
    counting: Counting, redis_server: RedisServer, tmp_path: Any
) -> None:
    counting.delay_s = 0.3  # the first is still in flight when the other process asks
    prefix = f"t{free_port()}:"
    procs = []
    try:
        for i in range(2):
            port, admin = free_port(), free_port()
            cfg = dedup_config(counting)
            cfg["listeners"] = [{"address": f"127.0.0.1:{port}"}]
            cfg["admin"] = {"address": f"127.0.0.1:{admin}"}
            cfg["redis"] = {"url": redis_server.url, "key_prefix": prefix, "timeout": "500ms"}
            path = tmp_path / f"gw{i}.yaml"
            write_config(path, cfg)
            procs.append(GatewayProcess(path, port, admin))
        await asyncio.gather(*(p.wait_ready() for p in procs))
        urls = [f"{p.url}/hook" for p in procs]
        async with aiohttp.ClientSession() as s:
            results = await asyncio.gather(*(post(s, u, b'{"a": 1}', key="shared") for u in urls))
            assert [r[0] for r in results] == [201, 201], results
            assert results[0][1] == results[1][1]
            assert sorted(r[2].get("Idempotent-Replayed", "") for r in results) == ["", "true"]
            assert counting.hits == 1
            # the same key with another body, at either process: 422
            for u in urls:
                assert (await post(s, u, b'{"a": 2}', key="shared"))[0] == 422
            # the key is namespaced and expires with the window (PX)
            key = f"{prefix}dedup:hooks:{hashlib.sha256(b'shared').hexdigest()}"
            client = Redis.from_url(redis_server.url)
            try:
                assert 0 < await client.pttl(key) <= 60_000
                await client.pexpire(key, 0)  # as if the window had passed
            finally:
                await client.aclose()
            assert (await post(s, urls[1], b'{"a": 2}', key="shared"))[0] == 201
            assert counting.hits == 2
    finally:
        for p in procs:
            p.stop()


@pytest.mark.parametrize(("policy", "want", "hits"), [("open", 201, 2), ("closed", 503, 0)])
async def test_redis_unreachable_follows_on_store_error(
    counting: Counting, worker_on: Any, policy: str, want: int, hits: int
) -> None:
    cfg = dedup_config(counting, on_store_error=policy)
    cfg["redis"] = {"url": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens there
    url = await start(worker_on, cfg)
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            st, body, h = await post(s, url, b"{}")
            assert st == want, body
            if want == 503:
                assert b"dedup_unavailable" in body and h["Retry-After"] == "1"
    assert counting.hits == hits
