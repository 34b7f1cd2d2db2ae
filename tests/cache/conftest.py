from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.cache.support import BACKENDS, cache_upstream
from tests.redis_server import RedisServer
from tests.support import serve_app


@pytest.fixture
async def hits() -> AsyncIterator[Counter[str]]:
    yield Counter()


@pytest.fixture
async def up(hits: Counter[str]) -> AsyncIterator[int]:
    async with serve_app(cache_upstream(hits)) as port:
        yield port


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test against the memory store and against a real redis-server."""
    return str(request.param)


@pytest.fixture
def store_args(backend: str, request: pytest.FixtureRequest) -> dict[str, str | None]:
    """`start(..., **store_args)`: the backend, and the session's redis-server for redis."""
    url = None
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    return {"backend": backend, "redis_url": url}
