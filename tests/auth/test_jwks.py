"""JWKS from a URL: a real loopback server (its hits counted), a fake monotonic clock.

The route's filter is built as a config load builds it, with the JwksSource injected
only to give it the fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.filters.auth import AuthFilter, build_auth_filter
from gateway.filters.auth.jwks import JwksSource, shared_source
from tests.auth.conftest import WallClock
from tests.auth.support import NOW, JwksServer, SigningKey, Terminal, exchange, route_config
from tests.ratelimit.conftest import FakeClock

CLAIMS = {"sub": "alice", "exp": NOW + 3600}


@pytest.fixture
async def server() -> Any:
    async with JwksServer().serve() as s:
        yield s


def source(url: str, mono: FakeClock) -> JwksSource:
    return JwksSource(
        url=url, refresh_s=300, min_refresh_s=30, max_stale_s=600, timeout_s=2, clock=mono
    )


def url_filter(src: JwksSource, wall: WallClock) -> AuthFilter:
    cfg = route_config({"auth": {"jwt": {"jwks_url": src.url, "cache_max_tokens": 0}}})
    f = build_auth_filter(cfg, clock=wall, jwks=src)
    assert f is not None
    return f


async def status(f: AuthFilter, token: str) -> int:
    ex = exchange(route_config({}), [("Authorization", f"Bearer {token}")])
    return (await f(ex, Terminal())).status


async def test_unknown_kid_refreshes_once_per_interval(
    server: JwksServer, keys: dict[str, SigningKey], clock: WallClock
) -> None:
    mono = FakeClock()
    server.doc = {"keys": [keys["RS256"].jwk()]}
    f = url_filter(source(server.url, mono), clock)
    assert await status(f, keys["RS256"].token(CLAIMS)) == 200
    assert server.hits == 1  # the first token waited for the first fetch

    # The IdP publishes a new key; a token signed with it arrives.
    server.doc = {"keys": [keys["RS256"].jwk(), keys["ES256"].jwk()]}
    new = keys["ES256"].token(CLAIMS)
    assert await status(f, new) == 401  # within min_refresh of the last fetch: no refetch
    assert server.hits == 1 and f.failures == {"unknown_kid": 1}
    mono.advance(30)
    assert await status(f, new) == 200  # refetched once, found
    assert server.hits == 2
    # Made-up kids right after: no more fetches (one per min_refresh at most).
    for i in range(5):
        bogus = SigningKey("EdDSA", f"nope-{i}", keys["EdDSA"].key).token(CLAIMS)
        assert await status(f, bogus) == 401
    assert server.hits == 2


async def test_refresh_interval_and_stale_window(
    server: JwksServer, keys: dict[str, SigningKey], clock: WallClock
) -> None:
    mono = FakeClock()
    server.doc = {"keys": [keys["EdDSA"].jwk()]}
    src = source(server.url, mono)
    f = url_filter(src, clock)
    token = keys["EdDSA"].token(CLAIMS)
    assert await status(f, token) == 200 and server.hits == 1
    server.status = 503  # the IdP goes down
    mono.advance(300)  # refresh due: started in the background, this request uses the keys
    assert await status(f, token) == 200
    await src.refresh()  # let the background fetch finish (it fails)
    assert server.hits >= 2 and src.failures >= 1
    mono.advance(600)  # at the end of the stale window: still the old keys
    assert await status(f, token) == 200
    mono.advance(1)  # past it: 503, not 401 (not the caller's fault)
    ex = exchange(route_config({}), [("Authorization", f"Bearer {token}")])
    reply = await f(ex, Terminal())
    assert reply.status == 503 and reply.headers["Retry-After"] == "5"
    assert f.failures == {"jwks_unavailable": 1}
    server.status = 200  # back: the next attempt (min_refresh after the last) recovers
    mono.advance(30)
    assert await status(f, token) == 200


async def test_first_fetch_failing_is_503_and_rate_limited(
    server: JwksServer, keys: dict[str, SigningKey], clock: WallClock
) -> None:
    mono = FakeClock()
    server.status = 500
    f = url_filter(source(server.url, mono), clock)
    token = keys["RS256"].token(CLAIMS)
    for _ in range(3):
        assert await status(f, token) == 503
    assert server.hits == 1  # one attempt per min_refresh, not one per request


async def test_a_bad_document_keeps_the_last_keys(
    server: JwksServer, keys: dict[str, SigningKey], clock: WallClock
) -> None:
    mono = FakeClock()
    server.doc = {"keys": [keys["RS256"].jwk()]}
    src = source(server.url, mono)
    f = url_filter(src, clock)
    token = keys["RS256"].token(CLAIMS)
    assert await status(f, token) == 200
    server.doc = {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}  # nothing usable
    mono.advance(300)
    await src.refresh()
    assert src.failures == 1
    assert await status(f, token) == 200


def test_routes_share_a_source_per_url_and_settings() -> None:
    a = shared_source("http://127.0.0.1:9/jwks", 300, 30, 600, 5)
    b = shared_source("http://127.0.0.1:9/jwks", 300, 30, 600, 5)
    c = shared_source("http://127.0.0.1:9/jwks", 60, 30, 600, 5)
    assert a is b and a is not c


async def test_a_key_removed_from_the_set_stops_vouching_for_cached_tokens(
    server: JwksServer, keys: dict[str, SigningKey], clock: WallClock
) -> None:
    mono = FakeClock()
    server.doc = {"keys": [keys["RS256"].jwk(), keys["ES256"].jwk()]}
    src = source(server.url, mono)
    cfg = route_config({"auth": {"jwt": {"jwks_url": src.url}}})  # the token cache on
    f = build_auth_filter(cfg, clock=clock, jwks=src)
    assert f is not None
    token = keys["RS256"].token(CLAIMS)
    assert await status(f, token) == 200 and await status(f, token) == 200
    mono.advance(300)
    await src.refresh()  # the same document again: the verified tokens stay
    assert (server.hits, src.generation) == (2, 1)
    assert await status(f, token) == 200
    server.doc = {"keys": [keys["ES256"].jwk()]}  # the RS256 key is revoked
    mono.advance(300)
    await src.refresh()
    assert src.generation == 2
    assert await status(f, token) == 401  # not served from the cache any more
