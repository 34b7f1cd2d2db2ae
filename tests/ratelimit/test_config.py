"""Rate limit config: every error at its path, defaults, normalisation."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import validate_data
from gateway.config.ratelimit_model import KeyPart, sentinel_parts
from tests.config.test_model import base, edited, errors_of

P = "routes[0].rate_limits[0]"
POLICY = {"name": "per-ip", "rate": "20/s"}
RATE = "expected '<n>/<s|min|h>', like '20/s', '1000/min' or '5/h'"
KEY = "expected 'client_ip', 'route', 'principal', {header: <name>} or {cookie: <name>}"
URL = (
    "expected 'redis://host:port/db', 'rediss://...', 'unix:///path' or "
    "'redis+sentinel://host:port[,host:port]/service[/db]'"
)


def policy(**fields: Any) -> dict[str, Any]:
    return {"routes[0].rate_limits": [{**POLICY, **fields}]}


# (id, edits, "path: message")
INVALID = [
    ("rate-missing", {"routes[0].rate_limits": [{"name": "p"}]}, f"{P}.rate: required"),
    ("rate-words", policy(rate="20 per second"), f"{P}.rate: invalid rate '20 per second': {RATE}"),
    ("rate-minute-m", policy(rate="20/m"), f"{P}.rate: invalid rate '20/m': {RATE}"),
    ("rate-zero", policy(rate="0/s"), f"{P}.rate: invalid rate '0/s': {RATE}"),
    ("rate-number", policy(rate=20), f"{P}.rate: invalid rate 20: {RATE}"),
    ("second-policy-rate", {"routes[0].rate_limits": [POLICY, {"name": "b", "rate": "5/d"}]},
     f"routes[0].rate_limits[1].rate: invalid rate '5/d': {RATE}"),
    ("name-missing", {"routes[0].rate_limits": [{"rate": "1/s"}]}, f"{P}.name: required"),
    ("name-space", policy(name="per ip"),
     f"{P}.name: invalid name 'per ip': use letters, digits, '_', '.', '-'"),
    ("burst-zero", policy(burst=0), f"{P}.burst: must be >= 1"),
    ("burst-string", policy(burst="10"), f"{P}.burst: must be an integer (got '10')"),
    ("key-empty", policy(key=[]), f"{P}.key: must have at least 1 item"),
    ("key-word", policy(key=["client_ip", "ip"]), f"{P}.key[1]: invalid key part 'ip': {KEY}"),
    ("key-unknown-mapping", policy(key=[{"query": "k"}]),
     f"{P}.key[0]: invalid key part {{'query': 'k'}}: {KEY}"),
    ("key-header-space", policy(key=[{"header": "X API"}]),
     f"{P}.key[0]: invalid header name 'X API': must be an HTTP token (RFC 9110 5.6.2)"),
    ("key-cookie-empty", policy(key=[{"cookie": ""}]),
     f"{P}.key[0]: invalid cookie name '': expected a non-empty string"),
    ("key-string", policy(key="client_ip"), f"{P}.key: must be a list (got 'client_ip')"),
    ("missing-key-word", policy(missing_key="allow"),
     f"{P}.missing_key: invalid missing_key 'allow': expected 'reject' or {{fallback: <value>}}"),
    ("missing-key-fallback-empty", policy(missing_key={"fallback": ""}),
     f"{P}.missing_key.fallback: must not be empty"),
    ("missing-key-unknown", policy(missing_key={"default": "x"}),
     f"{P}.missing_key.default: unknown key"),
    ("cost-negative", policy(cost={"default": -1}), f"{P}.cost.default: must be >= 0"),
    ("cost-method-token", policy(cost={"methods": {"PO ST": 2}}),
     f'{P}.cost.methods["PO ST"]: invalid method \'PO ST\': must be an HTTP token '
     "(RFC 9110 5.6.2)"),
    ("cost-above-burst", policy(burst=4, cost={"methods": {"POST": 5}}),
     f"{P}: cost.methods.POST 5 exceeds burst 4: such a request could never be admitted"),
    ("cost-default-above-rate", policy(rate="2/s", cost={"default": 3}),
     f"{P}: cost.default 3 exceeds burst 2: such a request could never be admitted"),
    ("mode-word", policy(mode="dry-run"),
     f"{P}.mode: invalid mode 'dry-run': expected 'enforce' or 'shadow'"),
    ("store-word", policy(store="disk"),
     f"{P}.store: invalid store 'disk': expected 'memory' or 'redis'"),
    ("on-store-error-bare-off", policy(on_store_error=False),
     f"{P}.on_store_error: invalid on_store_error False: expected 'open' or 'closed' (quote "
     "it: YAML reads a bare off as false)"),
    ("headers-string", policy(headers="yes"), f"{P}.headers: must be true or false (got 'yes')"),
    ("policy-unknown-key", policy(limit=5), f"{P}.limit: unknown key"),
    ("rate-limits-mapping", {"routes[0].rate_limits": POLICY},
     "routes[0].rate_limits: must be a list (got a mapping)"),
    # cross-field
    ("duplicate-policy", {"routes[0].rate_limits": [POLICY, {"name": "per-ip", "rate": "1/h"}]},
     "routes[0].rate_limits[1].name: duplicate policy name 'per-ip' (first in rate_limits[0])"),
    ("redis-store-without-redis", policy(store="redis"),
     f"{P}.store: 'redis' needs the top-level redis section"),
    # redis
    ("redis-url-scheme", {"redis": {"url": "http://h:6379"}},
     f"redis.url: invalid url 'http://h:6379': {URL}"),
    ("redis-url-db", {"redis": {"url": "redis://h:6379/x"}},
     "redis.url: invalid url 'redis://h:6379/x': the path is a database number"),
    ("redis-url-port", {"redis": {"url": "redis://h:99999"}},
     "redis.url: invalid url 'redis://h:99999': port must be a number in 0..65535"),
    ("redis-url-no-host", {"redis": {"url": "redis://"}},
     "redis.url: invalid url 'redis://': host is missing"),
    ("sentinel-no-service", {"redis": {"url": "redis+sentinel://h:26379"}},
     "redis.url: invalid url 'redis+sentinel://h:26379': the sentinel service name is missing"),
    ("sentinel-bad-address", {"redis": {"url": "redis+sentinel://h,i:1/m"}},
     "redis.url: invalid url 'redis+sentinel://h,i:1/m': bad sentinel address 'h'"),
    ("cluster-sentinel", {"redis": {"url": "redis+sentinel://h:1/m", "cluster": True}},
     "redis: cluster: true needs a redis:// or rediss:// url"),
    ("redis-timeout-zero", {"redis": {"timeout": 0}}, "redis.timeout: must be > 0"),
    ("redis-timeout-word", {"redis": {"timeout": "fast"}},
     "redis.timeout: invalid duration 'fast': expected a number of seconds or a string like "
     "'250ms', '10s', '5m'"),
    ("redis-prefix-brace", {"redis": {"key_prefix": "gw:{rl}:"}},
     "redis.key_prefix: must match ^[^{}\\s]*$"),
    ("redis-max-batch", {"redis": {"max_batch": 0}}, "redis.max_batch: must be >= 1"),
    ("breaker-failures", {"redis": {"breaker": {"failures": 0}}},
     "redis.breaker.failures: must be >= 1"),
    ("breaker-cap-below-start", {"redis": {"breaker": {"open_for": "5s", "max_open_for": "1s"}}},
     "redis: breaker.max_open_for must be >= breaker.open_for"),
    ("redis-unknown-key", {"redis": {"host": "h"}}, "redis.host: unknown key"),
    ("rate-limit-max-keys", {"rate_limit": {"memory_max_keys": 0}},
     "rate_limit.memory_max_keys: must be >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edits", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(edits: dict[str, Any], expected: str) -> None:
    assert errors_of(edited(edits)) == [expected]


VALID = [
    ("redis-defaults", {"redis": {}}),
    ("rediss", {"redis": {"url": "rediss://:secret@redis.example.com:6380/2"}}),
    ("unix", {"redis": {"url": "unix:///run/redis.sock"}}),
    ("cluster", {"redis": {"url": "redis://10.0.0.1:7000", "cluster": True}}),
    ("sentinel", {"redis": {"url": "redis+sentinel://:pw@s1:26379,[::1]:26380/mymaster/3"}}),
    ("redis-store", {"redis": {}, **policy(store="redis")}),
    ("all-fields", policy(burst=40, key=["client_ip", "route", {"header": "X-API-Key"},
                                         {"cookie": "session"}],
                          missing_key={"fallback": "anonymous"},
                          cost={"default": 2, "methods": {"post": 5, "OPTIONS": 0}},
                          mode="shadow", store="memory", on_store_error="closed",
                          headers=False)),
]  # fmt: skip


@pytest.mark.parametrize("edits", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid(edits: dict[str, Any]) -> None:
    validate_data(edited(edits))


def test_defaults_and_normalisation() -> None:
    config = validate_data(
        edited(policy(rate="1000/min", key=["client_ip", {"header": "X-API-Key"}],
                      missing_key={"fallback": "anon"}, cost={"methods": {"post": 5}}))
    )  # fmt: skip
    p = config.routes[0].rate_limits[0]
    assert (p.rate, p.rate_count, p.period_s, p.burst_tokens) == ("1000/min", 1000, 60, 1000)
    assert p.rate_per_s == pytest.approx(1000 / 60)
    assert p.key == [KeyPart(source="client_ip"), KeyPart(source="header", name="X-API-Key")]
    assert p.missing_key.fallback == "anon"
    assert (p.cost.default, p.cost.methods, p.cost.for_method("POST")) == (1, {"POST": 5}, 5)
    assert (p.mode, p.store, p.on_store_error, p.headers) == ("enforce", None, "open", True)
    plain = validate_data(edited(policy()))
    q = plain.routes[0].rate_limits[0]
    assert (q.key, q.missing_key.fallback, q.burst_tokens) == (
        [KeyPart(source="client_ip")],
        None,
        20,
    )
    assert plain.redis is None and plain.rate_limit.memory_max_keys == 100_000
    assert base()["routes"][0].get("rate_limits") is None
    redis = validate_data(edited({"redis": {}})).redis
    assert redis is not None
    assert (redis.url, redis.cluster, redis.timeout, redis.key_prefix) == (
        "redis://127.0.0.1:6379/0", False, 0.05, "gw:rl:")  # fmt: skip
    assert (redis.max_batch, redis.max_in_flight) == (256, 1)
    assert (redis.breaker.failures, redis.breaker.open_for, redis.breaker.max_open_for) == (
        3, 0.25, 10.0)  # fmt: skip


def test_sentinel_url_parts() -> None:
    assert sentinel_parts("redis+sentinel://:p%40w@s1:26379,[::1]:26380/mymaster/3") == (
        [("s1", 26379), ("::1", 26380)], "mymaster", 3, "p@w")  # fmt: skip
    assert sentinel_parts("redis+sentinel://s1:26379/m") == ([("s1", 26379)], "m", 0, None)
