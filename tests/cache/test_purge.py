"""Purge by key, prefix and tag, on both stores; tags from the response; bounded index.

The key of an entry is its URL form `host/path?query` (tests/cache/support.py's
gateway is reached as 127.0.0.1, so that is the host); a prefix matches the same form.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gateway.cache.policy import CacheControl
from gateway.cache.store import Entry, MemoryStore, purge_target
from tests.cache.support import get, start
from tests.conftest import GatewayFactory

StoreArgs = dict[str, Any]
H = "127.0.0.1"
Q = "cc=max-age%3D60"  # every request below asks for max-age=60 first

# Stored before each case: (path, query) -> tags (Surrogate-Key)
STORED: list[tuple[str, dict[str, str]]] = [
    ("/a/1", {"id": "a1", "tags": "t1 shared"}),
    ("/a/2", {"id": "a2", "x": "1", "tags": "t2 shared"}),
    ("/ab", {"id": "ab", "tags": "t3,shared"}),  # Cache-Tag style: commas
    ("/b/1", {"id": "b1"}),
]

# (id, purge arguments, removed, ids that miss afterwards)
CASES: list[tuple[str, dict[str, str], int, set[str]]] = [
    ("key", {"key": f"{H}/a/1?{Q}&id=a1&tags=t1+shared"}, 1, {"a1"}),
    ("key-with-scheme", {"key": f"http://{H}/a/1?{Q}&id=a1&tags=t1+shared"}, 1, {"a1"}),
    ("key-no-such", {"key": f"{H}/a/1"}, 0, set()),
    ("prefix-dir", {"prefix": f"{H}/a/"}, 2, {"a1", "a2"}),
    ("prefix-path", {"prefix": f"{H}/a"}, 3, {"a1", "a2", "ab"}),
    ("prefix-host", {"prefix": H}, 4, {"a1", "a2", "ab", "b1"}),
    ("tag", {"tag": "t2"}, 1, {"a2"}),
    ("tag-comma-separated", {"tag": "t3"}, 1, {"ab"}),
    ("tag-shared", {"tag": "shared"}, 3, {"a1", "a2", "ab"}),
    ("tag-unknown", {"tag": "nope"}, 0, set()),
]


@pytest.mark.parametrize(
    ("args", "removed", "missing"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_purge(
    gateway: GatewayFactory,
    store_args: StoreArgs,
    up: int,
    hits: Counter[str],
    args: dict[str, str],
    removed: int,
    missing: set[str],
) -> None:
    gw, _ = await start(gateway, up, **store_args)
    for path, q in STORED:
        await get(gw, path=path, cc="max-age=60", **q)
    assert await gw.worker.runtime.cache.purge(**args) == removed
    for path, q in STORED:
        _, h, _ = await get(gw, path=path, cc="max-age=60", **q)
        assert h["Cache-Status"].startswith("gateway; hit") == (q["id"] not in missing), path
    assert all(hits[q["id"]] == 1 + (q["id"] in missing) for _, q in STORED)


async def test_purge_by_key_removes_every_variant(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, {"key": {"query": ["id"]}}, **store_args)
    for lang in ("en", "fr"):
        await get(gw, headers={"Accept-Language": lang}, id="v", vary="Accept-Language",
                  cc="max-age=60")  # fmt: skip
    assert await gw.worker.runtime.cache.purge(key=f"{H}/r?id=v") == 2
    await get(gw, headers={"Accept-Language": "en"}, id="v", vary="Accept-Language")
    assert hits["v"] == 3


@pytest.mark.parametrize(
    ("cache", "seen"),
    [({}, None), ({"strip_tags_header": False}, "t1 t2"), ({"tags_header": None}, "t1 t2")],
    ids=["stripped", "kept", "tags-off"],
)
async def test_tags_header_reaches_the_client_only_when_asked(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, cache: dict[str, Any], seen: str | None
) -> None:
    gw, _ = await start(gateway, up, cache, **store_args)
    _, miss, _ = await get(gw, id="a", cc="max-age=60", tags="t1 t2")
    _, hit, _ = await get(gw, id="a", cc="max-age=60", tags="t1 t2")
    assert hit["Cache-Status"].startswith("gateway; hit")
    assert miss.get("Surrogate-Key") == seen and hit.get("Surrogate-Key") == seen
    expected = 0 if cache.get("tags_header", "x") is None else 1
    assert await gw.worker.runtime.cache.purge(tag="t1") == expected


async def test_cache_tag_header(
    gateway: GatewayFactory, store_args: StoreArgs, up: int, hits: Counter[str]
) -> None:
    gw, _ = await start(gateway, up, {"tags_header": "Cache-Tag"}, **store_args)
    _, h, _ = await get(gw, id="a", cc="max-age=60", ctags="product-1,catalog")
    assert "Cache-Tag" not in h
    assert await gw.worker.runtime.cache.purge(tag="catalog") == 1
    await get(gw, id="a", cc="max-age=60", ctags="product-1,catalog")
    assert hits["a"] == 2


def entry(i: int, tags: tuple[str, ...]) -> Entry:
    return Entry(
        primary=f"h/p{i}\x00api\x00http\x00",
        key=f"h/p{i}\x00api\x00http\x00\x01",
        status=200,
        reason="OK",
        headers=[("Content-Type", "text/plain")],
        body=b"x" * 500,
        cc=CacheControl(),
        lifetime=60,
        stored_at=0,
        age0=0,
        tags=tags,
    )


def test_tag_index_stays_bounded_by_the_live_entries() -> None:
    store = MemoryStore(20_000)
    for i in range(5000):  # every entry with its own tags, far more than fit
        store.store(entry(i, (f"own-{i}", f"group-{i % 7}")))
        urls, tags = store.index_sizes()
        assert urls == len(store) and tags <= len(store) + 7
    assert store.evictions > 4900
    store.store(entry(5000, ("own-5000",)))
    store.store(entry(5000, ("other",)))  # replaced: its old tag goes with it
    _, tags = store.index_sizes()
    assert tags <= len(store) + 7


async def test_purging_everything_empties_the_indexes() -> None:
    store = MemoryStore(1 << 20)
    for i in range(100):
        store.store(entry(i, (f"t{i % 3}",)))
    assert await store.purge(tag="t0") == 34
    assert await store.purge(prefix="h/") == 66
    assert (len(store), store.index_sizes(), store.bytes) == (0, (0, 0), 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [({}, "exactly one"), ({"key": "a", "tag": "b"}, "exactly one"), ({"prefix": ""}, "empty")],
    ids=["none", "two", "empty"],
)
def test_purge_arguments(args: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        purge_target(args.get("key"), args.get("prefix"), args.get("tag"))


def test_purge_target_normalises_scheme_and_host_case() -> None:
    assert purge_target("HTTPS://Example.COM/A?b", None, None) == ("key", "example.com/A?b")
    assert purge_target(None, None, "Tag") == ("tag", "Tag")
