"""API keys: from a header or a query parameter, hashes from the config or a file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.filters.auth import AuthFilter, build_auth_filter
from tests.auth.support import Terminal, exchange, key_hash, route_config

GOLD_KEY = "k-gold-3f9a1c"
PLAIN_KEY = "k-plain-77b2e0"
FILE_KEY = "k-file-0c1d2e"


def key_filter(api_keys: dict[str, Any]) -> AuthFilter:
    f = build_auth_filter(route_config({"auth": {"api_keys": api_keys}}))
    assert f is not None
    return f


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.txt"
    path.write_text(f"# name hash tier\n\nfile-user {key_hash(FILE_KEY)} silver\n")
    return str(path)


@pytest.fixture
def api_keys(keys_file: str) -> dict[str, Any]:
    return {
        "header": "X-API-Key",
        "query": "api_key",
        "keys": [
            {"name": "billing", "hash": key_hash(GOLD_KEY), "tier": "gold"},
            {"name": "reports", "hash": key_hash(PLAIN_KEY).upper().replace("SHA256", "sha256")},
        ],
        "file": keys_file,
        "realm": "orders",
    }


# (id, headers, query, status, principal, tier, upstream query)
CASES = [
    ("header-gold", [("X-API-Key", GOLD_KEY)], "", 200, "billing", "gold", ""),
    ("header-no-tier", [("X-API-Key", PLAIN_KEY)], "", 200, "reports", None, ""),
    ("file-key", [("X-API-Key", FILE_KEY)], "", 200, "file-user", "silver", ""),
    ("query", [], f"a=1&api_key={GOLD_KEY}&b=2", 200, "billing", "gold", "a=1&b=2"),
    ("query-encoded", [], "api%5Fkey=k-plain-77b2e0", 200, "reports", None, ""),
    ("missing", [], "a=1", 401, None, None, None),
    ("empty-header", [("X-API-Key", "")], "", 401, None, None, None),
    ("wrong", [("X-API-Key", "k-guess")], "", 401, None, None, None),
    ("hash-as-key", [("X-API-Key", key_hash(GOLD_KEY))], "", 401, None, None, None),
]


@pytest.mark.parametrize(
    ("headers", "query", "status", "principal", "tier", "upstream_query"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_keys(
    api_keys: dict[str, Any],
    headers: list[tuple[str, str]],
    query: str,
    status: int,
    principal: str | None,
    tier: str | None,
    upstream_query: str | None,
) -> None:
    f = key_filter(api_keys)
    t = Terminal()
    reply = await f(exchange(route_config({}), headers, query=query), t)
    assert reply.status == status
    if status == 200:
        assert t.principal == (principal, tier)
        assert t.headers is not None and "X-API-Key" not in t.headers  # strip: true
        assert t.query == upstream_query
    else:
        assert t.calls == 0
        assert reply.headers["WWW-Authenticate"] == 'ApiKey realm="orders"'
        body = json.loads(reply.body)
        assert body["error"] == "unauthorized" and body["request_id"] == "req-1"


async def test_strip_false_forwards_the_key(api_keys: dict[str, Any]) -> None:
    f = key_filter({**api_keys, "strip": False})
    t = Terminal()
    await f(exchange(route_config({}), [("X-API-Key", GOLD_KEY)], query="api_key=x"), t)
    assert t.headers is not None and t.headers["X-API-Key"] == GOLD_KEY
    assert t.query == "api_key=x"


async def test_failures_are_logged_without_the_key(
    api_keys: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    f = key_filter(api_keys)
    with caplog.at_level(logging.INFO, logger="gateway.auth"):
        await f(exchange(route_config({}), [("X-API-Key", "k-secret-guess-123")]), Terminal())
    (record,) = [r for r in caplog.records if r.name == "gateway.auth"]
    line = record.getMessage()
    assert "route=api" in line and "reason=key_invalid" in line and "203.0.113.7" in line
    assert "k-secret-guess-123" not in line
    assert f.failures == {"key_invalid": 1}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("alice sha256:abc\n", "keys.txt:1: invalid key hash"),
        ("# ok\nalice\n", "keys.txt:2: expected '<name> sha256:<hex> \\[<tier>\\]'"),
        (f"al/ice {key_hash('x')}\n", "keys.txt:1: names and tiers are"),
        (f"billing {key_hash('other')}\n", "API key name 'billing' is given twice"),
        (f"dup {key_hash(GOLD_KEY)}\n", "API keys 'billing' and 'dup' are the same"),
    ],
    ids=["bad-hash", "no-hash", "slash-in-name", "duplicate-name", "duplicate-key"],
)
def test_key_file_errors(
    api_keys: dict[str, Any], tmp_path: Path, content: str, match: str
) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        key_filter({**api_keys, "file": str(path)})


def test_missing_key_file(api_keys: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="route 'api' auth: cannot read the key file"):
        key_filter({**api_keys, "file": str(tmp_path / "nope.txt")})
