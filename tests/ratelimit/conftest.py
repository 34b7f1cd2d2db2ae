"""Fixtures for the rate limiter: a fake clock and a fresh key prefix.

The real redis-server fixtures (`redis_server` for the session, `redis_factory` for
servers a test kills, pauses or restarts) live in tests/redis_server.py and are
exposed to every package by tests/conftest.py; `RedisServer` is re-exported here for
the tests that import it from this module.
"""

from __future__ import annotations

import uuid

import pytest

from tests.redis_server import MISSING, RedisServer
from tests.support import FakeClock

__all__ = ["MISSING", "FakeClock", "RedisServer"]


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix, so tests sharing the session server never meet."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
