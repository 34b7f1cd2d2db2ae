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
    assert CacheStore().max_bytes == 64 << 20


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
    ],
    ids=[
        "zero-entry",
        "negative-ttl",
        "dup-header",
        "bad-header",
        "dup-param",
        "bad-query",
        "unknown",
    ],
)
def test_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Cache.model_validate(data)
    assert message in str(err.value)
