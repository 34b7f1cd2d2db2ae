"""Every feature's metrics exist and move when the feature acts, end to end.

One `python -m gateway run` with two workers and every feature on (the package's
`stack` fixture, conftest.py: starting it is the slow part); each case is an action
through the gateway and the metric that must grow in the admin listener's scrape
(parsed with prometheus_client's parser). Cases do not depend on each other: each
acts as its own client address (X-Forwarded-For from a trusted proxy), so rate-limit
buckets and bans are its own. The access log (full, to a file) is checked on the same
traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.observability.support import Stack, exists, scrape, value
from tests.support import GatewayProcess, free_port, serve_app, upstream_app, write_config

Action = Callable[[GatewayProcess, str], Awaitable[None]]


def requests(
    path: str, n: int = 1, method: str = "GET", fresh: bool = False, **headers: str
) -> Action:
    """`n` requests as client `ip`; `fresh`: a new connection each (both workers)."""

    async def act(gw: GatewayProcess, ip: str) -> None:
        conn = aiohttp.TCPConnector(force_close=fresh)
        h = {"X-Forwarded-For": ip, **headers}
        async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as s:
            for _ in range(n):
                async with s.request(method, gw.url + path, headers=h) as r:
                    await r.read()

    return act


async def nothing(gw: GatewayProcess, ip: str) -> None:
    """The feature acts on its own (health checks run every 200 ms)."""


async def reload(gw: GatewayProcess, ip: str) -> None:
    gw.signal(signal.SIGHUP)


XSS = "/screened?q=%3Cscript%3Ealert(1)%3C/script%3E"

# (id, action, metric, labels): the metric must grow after the action.
CASES: list[tuple[str, Action, str, dict[str, str]]] = [
    ("requests-by-upstream-and-region", requests("/hello"), "gateway_requests_total",
     {"route": "all", "upstream": "up", "region": "eu", "status_class": "2xx"}),
    ("request-duration-by-version", requests("/svc/a", **{"X-Canary": "never"}),
     "gateway_request_duration_seconds_count",
     {"route": "svc", "version": "stable", "upstream": "up"}),
    ("upstream-latency", requests("/hello"), "gateway_upstream_response_duration_seconds_count",
     {"upstream": "up"}),
    ("worker-requests", requests("/hello"), "gateway_worker_requests_total", {}),
    ("ratelimit-allowed", requests("/limited"), "gateway_ratelimit_decisions_total",
     {"route": "limited", "policy": "tight", "decision": "allowed"}),
    ("ratelimit-limited", requests("/limited", 4), "gateway_ratelimit_decisions_total",
     {"route": "limited", "decision": "limited"}),
    ("ratelimit-shadow", requests("/shadowlimited", 4), "gateway_ratelimit_decisions_total",
     {"route": "shadowlimited", "decision": "shadow"}),
    ("screening-inspected", requests("/screened/ok"), "gateway_screening_inspected_total",
     {"route": "screened"}),
    ("screening-blocked", requests(XSS), "gateway_screening_blocks_total",
     {"route": "screened", "category": "xss", "action": "blocked"}),
    ("screening-shadow", requests("/screenshadow?q=%3Cscript%3Ealert(1)%3C/script%3E"),
     "gateway_screening_blocks_total", {"route": "screenshadow", "action": "shadow"}),
    ("ban-issued", requests(XSS), "gateway_bans_issued_total", {}),
    ("ban-refused", requests(XSS, 3), "gateway_bans_refused_total", {"mode": "enforce"}),
    ("health-passed", nothing, "gateway_upstream_health_checks_total",
     {"upstream": "up", "result": "passed"}),
    ("health-failed", nothing, "gateway_upstream_health_checks_total",
     {"upstream": "sick", "result": "failed"}),
    ("cache-miss", requests("/cached/m"), "gateway_cache_requests_total",
     {"route": "cached", "result": "miss"}),
    ("cache-hit", requests("/cached/h", 3), "gateway_cache_requests_total",
     {"route": "cached", "result": "hit"}),
    ("cache-bytes", requests("/cached/b", 3), "gateway_cache_served_bytes_total",
     {"route": "cached"}),
    ("cache-bypass", requests("/cached/p", method="POST"), "gateway_cache_requests_total",
     {"route": "cached", "result": "bypass"}),
    ("compression-in", requests("/compressed", **{"Accept-Encoding": "gzip"}),
     "gateway_compression_input_bytes_total", {"route": "compressed", "encoding": "gzip"}),
    ("compression-out", requests("/compressed", **{"Accept-Encoding": "gzip"}),
     "gateway_compression_output_bytes_total", {"route": "compressed", "encoding": "gzip"}),
    ("breaker-transition", requests("/broken", 6, fresh=True),
     "gateway_upstream_breaker_transitions_total", {"upstream": "down", "to_state": "open"}),
    ("rollout-rolled-back", requests("/svc/c", 20, fresh=True, **{"X-Canary": "always"}),
     "gateway_rollout_outcomes_total", {"rollout": "svc", "outcome": "rolled_back"}),
    ("access-log-lines", requests("/hello"), "gateway_access_log_lines_total", {}),
    ("config-reload", reload, "gateway_config_reloads_total", {"result": "ok"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("index", "action", "metric", "labels"),
    [(i, *c[1:]) for i, c in enumerate(CASES)],
    ids=[c[0] for c in CASES],
)
async def test_metric_moves(
    stack: Stack, index: int, action: Action, metric: str, labels: dict[str, str]
) -> None:
    ip = f"10.9.{index}.1"  # each case is a client of its own (buckets, bans)
    before = value(await scrape(stack.gw), metric, **labels)
    await action(stack.gw, ip)
    deadline = time.monotonic() + 15  # flushes come once a second; a rollout ticks
    while True:
        samples = await scrape(stack.gw)
        if value(samples, metric, **labels) > before:
            break
        assert time.monotonic() < deadline, f"{metric}{labels} stayed at {before}"
        await asyncio.sleep(0.2)


# Every metric the issue names, present in a scrape (before or after its feature acted).
NAMED = [
    "gateway_requests_total",
    "gateway_request_duration_seconds_bucket",
    "gateway_requests_in_flight",
    "gateway_upstream_response_duration_seconds_bucket",
    "gateway_worker_requests_total",
    "gateway_ratelimit_decisions_total",
    "gateway_ratelimit_store_errors_total",
    "gateway_ratelimit_store_fallbacks_total",
    "gateway_screening_inspected_total",
    "gateway_screening_blocks_total",
    "gateway_bans_active",
    "gateway_bans_issued_total",
    "gateway_bans_refused_total",
    "gateway_upstream_breaker_state",
    "gateway_upstream_breaker_transitions_total",
    "gateway_upstream_health_checks_total",
    "gateway_upstream_endpoint_healthy",
    "gateway_cache_requests_total",
    "gateway_cache_served_bytes_total",
    "gateway_cache_store_bytes",
    "gateway_compression_responses_total",
    "gateway_compression_input_bytes_total",
    "gateway_compression_output_bytes_total",
    "gateway_rollout_step",
    "gateway_rollout_canary_weight_ratio",
    "gateway_rollout_state",
    "gateway_rollout_outcomes_total",
    "gateway_config_reloads_total",
    "gateway_config_info",
    "gateway_access_log_lines_total",
    "gateway_access_log_dropped_total",
]


async def test_every_named_metric_exists(stack: Stack) -> None:
    deadline = time.monotonic() + 10
    while True:
        samples = await scrape(stack.gw)
        missing = [n for n in NAMED if not exists(samples, n)]
        if not missing:
            break
        assert time.monotonic() < deadline, f"missing from the scrape: {missing}"
        await asyncio.sleep(0.2)
    assert exists(samples, "gateway_rollout_state", rollout="svc", state="progressing")
    assert value(samples, "gateway_upstream_endpoint_healthy", upstream="up") == 1


async def test_ban_shows_active(stack: Stack) -> None:
    await requests(XSS)(stack.gw, "10.7.0.1")  # blocked, and banned (after_blocks: 1)
    deadline = time.monotonic() + 10
    while value(await scrape(stack.gw), "gateway_bans_active") < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


FIELDS = {
    "time", "request_id", "client", "method", "path", "status", "bytes_in", "bytes_out",
    "duration_ms", "route", "upstream", "endpoint", "version", "region", "cache",
    "rate_limit", "screening",
}  # fmt: skip


async def read_lines(log: Path, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The access log lines of these requests, once every worker wrote them."""
    deadline = time.monotonic() + 10
    while True:
        found: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in (await asyncio.to_thread(log.read_bytes)).splitlines():
                entry = orjson.loads(line)  # every line parses as JSON
                if entry["request_id"] in request_ids:
                    found[entry["request_id"]] = entry
        if len(found) == len(request_ids):
            return found
        assert time.monotonic() < deadline, f"lines missing: {request_ids - set(found)}"
        await asyncio.sleep(0.1)


async def test_access_log_lines(stack: Stack) -> None:
    ids = {
        "plain": "rid-plain-1",
        "cached": "rid-cached-2",
        "limited": "rid-limited-3",
        "blocked": "rid-blocked-4",
        "version": "rid-version-5",
    }
    base = {"X-Forwarded-For": "10.8.0.1"}
    async with aiohttp.ClientSession() as s:

        async def get(path: str, rid: str, method: str = "GET", **h: str) -> None:
            headers = {**base, "X-Request-Id": rid, **h}
            async with s.request(method, stack.gw.url + path, headers=headers) as r:
                await r.read()

        await get("/hello?token=secret", ids["plain"], "POST")
        await get("/cached/log", "warm")
        await get("/cached/log", ids["cached"])
        await get("/limited/log", "first", **{"X-Forwarded-For": "10.8.0.2"})
        await get("/limited/log", ids["limited"], **{"X-Forwarded-For": "10.8.0.2"})
        xss = "/screened?q=%3Cscript%3Ealert(1)%3C/script%3E"
        await get(xss, ids["blocked"], **{"X-Forwarded-For": "10.8.0.3"})  # banned after
        await get("/svc/v", ids["version"], **{"X-Canary": "never"})
    lines = await read_lines(stack.log, set(ids.values()))
    plain = lines[ids["plain"]]
    assert set(plain) == FIELDS, set(plain) ^ FIELDS
    assert plain["method"] == "POST"
    assert plain["path"] == "/hello"  # no query by default
    assert plain["client"] == "10.8.0.1"
    assert plain["status"] == 200
    assert plain["route"] == "all" and plain["upstream"] == "up" and plain["region"] == "eu"
    assert plain["endpoint"].startswith("127.0.0.1:") or "//127.0.0.1:" in plain["endpoint"]
    assert plain["bytes_out"] > 0 and plain["duration_ms"] >= 0
    assert plain["time"].endswith("Z") and plain["time"][10] == "T"
    assert lines[ids["cached"]]["cache"] == "hit"
    assert lines[ids["cached"]]["upstream"] is None  # answered from the cache
    assert lines[ids["limited"]]["status"] == 429
    assert lines[ids["limited"]]["rate_limit"] == "limited"
    blocked = lines[ids["blocked"]]
    assert (blocked["status"], blocked["screening"]) == (403, "blocked")
    assert lines[ids["version"]]["version"] == "stable"


async def test_ratelimit_store_errors(tmp_path: Path) -> None:
    """Redis unreachable: a fail-closed policy answers 503, counted as store_error,
    and the store errors counter (the alert's metric) moves."""
    dead = free_port()
    async with serve_app(upstream_app()) as up:
        port, admin = free_port(), free_port()
        policy = {"name": "shared", "rate": "100/s", "store": "redis", "on_store_error": "closed"}
        cfg = {
            "listeners": [{"address": f"127.0.0.1:{port}"}],
            "admin": {"address": f"127.0.0.1:{admin}"},
            "redis": {"url": f"redis://127.0.0.1:{dead}/0"},
            "upstreams": {"up": {"endpoints": [f"http://127.0.0.1:{up}"]}},
            "routes": [{"name": "r", "upstream": "up", "rate_limits": [policy]}],
        }
        path = tmp_path / "gateway.yaml"
        write_config(path, cfg)
        gw = GatewayProcess(path, port, admin)
        try:
            await gw.wait_ready(60)
            await requests("/x", 3)(gw, "10.5.0.1")
            deadline = time.monotonic() + 10
            while True:
                samples = await scrape(gw)
                decided = value(
                    samples, "gateway_ratelimit_decisions_total", route="r", decision="store_error"
                )
                if decided >= 3 and value(samples, "gateway_ratelimit_store_errors_total") >= 3:
                    break
                assert time.monotonic() < deadline, samples
                await asyncio.sleep(0.2)
        finally:
            gw.stop()
