"""The cache config: defaults, units, and errors at their path."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config.model import Cache, CacheStore


def test_defaults() -> None:
    c = Cache()
    assert (c.max_entry_bytes, c.default_ttl, c.key.headers, c.key.query) == (
        1 << 20,
        0.0,
        [],
        "all",
    )
    store = CacheStore()
    assert (store.backend, store.max_bytes) == ("memory", 64 << 20)
    assert (store.redis.timeout, store.redis.key_prefix, store.redis.keep_stale) == (
        0.05,
        "gw:cache:",
        600.0,
    )
    assert (c.tags_header, c.strip_tags_header) == ("Surrogate-Key", True)


def test_units_and_lists() -> None:
    c = Cache.model_validate(
        {"max_entry_bytes": "2KiB", "default_ttl": "1m", "key": {"query": ["a", "b"]}}
    )
    assert (c.max_entry_bytes, c.default_ttl, c.key.query) == (2048, 60.0, ["a", "b"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_entry_bytes": 0}, "greater than 0"),
        ({"default_ttl": -1}, "must be >= 0"),
        ({"key": {"headers": ["X-A", "x-a"]}}, "given twice"),
        ({"key": {"headers": ["bad name"]}}, "invalid header name"),
        ({"key": {"query": ["a", "a"]}}, "given twice"),
        ({"key": {"query": "some"}}, "query"),
        ({"ttl": 1}, "Extra inputs"),
        ({"tags_header": "bad name"}, "invalid header name"),
    ],
    ids=[
        "zero-entry",
        "negative-ttl",
        "dup-header",
        "bad-header",
        "dup-param",
        "bad-query",
        "unknown",
        "bad-tags-header",
    ],
)
def test_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Cache.model_validate(data)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"backend": "disk"}, "backend", "Input should be 'memory' or 'redis'"),
        ({"redis": {"url": "http://x"}}, "redis.url", "invalid url"),
        ({"redis": {"key_prefix": "a*"}}, "redis.key_prefix", "should match pattern"),
        ({"redis": {"timeout": 0}}, "redis.timeout", "greater than 0"),
        ({"redis": {"keep_stale": -1}}, "redis.keep_stale", "must be >= 0"),
        ({"redis": {"cluster": True}}, "redis.cluster", "Extra inputs"),
    ],
    ids=["backend", "url", "prefix-glob", "timeout", "keep-stale", "cluster-unsupported"],
)
def test_store_errors(data: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        CacheStore.model_validate(data)
    text = str(err.value)
    assert path in text and message in text


def test_redis_store_settings() -> None:
    s = CacheStore.model_validate(
        {"backend": "redis", "redis": {"url": "redis://10.0.0.1:6380/2", "keep_stale": "1m"}}
    )
    assert (s.backend, s.redis.url, s.redis.keep_stale) == ("redis", "redis://10.0.0.1:6380/2", 60)
