"""Gateway self-protection: the monitor's limits as a table, the filter with the monitor's
state set, and a Worker whose event loop the test blocks for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from gateway.config.load import validate_data
from gateway.config.overload_model import Overload
from gateway.errors import ConfigErrors
from gateway.exchange import Exchange, Reply
from gateway.filters.overload import OverloadFilter
from gateway.observability.metrics import REQUESTS, flush_all
from gateway.overload import SHED, SHED_ALL, OverloadMonitor
from gateway.routing import Route
from tests.overload.conftest import base_config

SETTINGS = Overload(lag_threshold=0.1, max_in_flight=100)  # shed_at 0.5/0.7/0.9/1.0

# (id, lag samples in order, expected limits for low, normal, high, critical)
LAG_CASES = [
    ("calm", [0.0], [50, 70, 90, 100]),
    ("below-low", [0.049], [50, 70, 90, 100]),
    ("low-first", [0.05], [SHED_ALL, 70, 90, 100]),
    ("then-normal", [0.075], [SHED_ALL, SHED_ALL, 90, 100]),
    ("then-high", [0.091], [SHED_ALL, SHED_ALL, SHED_ALL, 100]),
    ("critical-never-by-lag", [5.0], [SHED_ALL, SHED_ALL, SHED_ALL, 100]),
    ("decays-by-half", [0.1, 0.0], [SHED_ALL, 70, 90, 100]),
    ("recovers", [0.1, 0.0, 0.0], [50, 70, 90, 100]),
    ("rises-at-once", [0.0, 0.0, 0.08], [SHED_ALL, SHED_ALL, 90, 100]),
    ("negative-sample-is-zero", [-0.5], [50, 70, 90, 100]),
]


@pytest.mark.parametrize(("samples", "limits"), [c[1:] for c in LAG_CASES],
                         ids=[c[0] for c in LAG_CASES])  # fmt: skip
def test_monitor_limits(samples: list[float], limits: list[int]) -> None:
    monitor = OverloadMonitor(SETTINGS)
    for s in samples:
        monitor.observe(s)
    assert monitor.limits == limits, monitor


def test_monitor_without_settings_admits_everything_and_reconfigures_in_place() -> None:
    monitor = OverloadMonitor(None)
    held = monitor.limits
    monitor.observe(10.0)
    assert min(monitor.limits) > 10**9
    monitor.configure(SETTINGS)
    assert held is monitor.limits and monitor.limits[0] == SHED_ALL


def exchange(route: str = "r") -> Exchange:
    rcfg = validate_data(base_config("http://127.0.0.1:9", [{"name": route}]), "t").routes[0]
    return Exchange(
        method="GET", path="/", query="", headers=CIMultiDict(), host="h", scheme="http",
        client_ip="192.0.2.1", client_port=1, request_id="rid", route=Route(rcfg), body=None,
        content_length=None,
    )  # fmt: skip


async def ok(ex: Exchange) -> Reply:
    return Reply(200)


@pytest.fixture
def in_flight() -> Iterator[Any]:
    """Set this process's in-flight count (as server.py keeps it) for one test."""
    before = REQUESTS.active

    def set_to(n: int) -> None:
        REQUESTS.active = n

    yield set_to
    REQUESTS.active = before


# (id, lag sample, in flight, priority, expected status, reason counted)
FILTER_CASES = [
    ("calm-low", 0.0, 1, "low", 200, None),
    ("lag-sheds-low", 0.06, 1, "low", 503, "lag"),
    ("lag-spares-high", 0.06, 1, "high", 200, None),
    ("lag-never-critical", 9.0, 1, "critical", 200, None),
    ("in-flight-sheds-low-first", 0.0, 51, "low", 503, "in_flight"),
    ("in-flight-spares-normal", 0.0, 51, "normal", 200, None),
    ("in-flight-sheds-high", 0.0, 91, "high", 503, "in_flight"),
    ("in-flight-at-max-sheds-critical", 0.0, 101, "critical", 503, "in_flight"),
    ("critical-up-to-max", 0.0, 100, "critical", 200, None),
]


@pytest.mark.parametrize(
    ("lag", "active", "priority", "status", "reason"),
    [c[1:] for c in FILTER_CASES],
    ids=[c[0] for c in FILTER_CASES],
)
async def test_filter(
    in_flight: Any, lag: float, active: int, priority: str, status: int, reason: str | None
) -> None:
    monitor = OverloadMonitor(SETTINGS)
    monitor.observe(lag)
    route = f"f-{priority}-{lag}-{active}"
    f = OverloadFilter(SETTINGS, monitor, route=route, priority=priority)
    in_flight(active)
    reply = await f(exchange(route), ok)
    assert reply.status == status
    counted = {k[2]: n for k, n in SHED.items() if k[0] == route and n}
    if reason is None:
        assert counted == {}
    else:
        assert counted == {reason: 1}
        assert reply.headers["Retry-After"] == "1"
        assert b'"error":"overloaded"' in reply.body


async def test_shadow_mode_counts_and_passes(in_flight: Any) -> None:
    settings = Overload(lag_threshold=0.1, max_in_flight=100, mode="shadow")
    monitor = OverloadMonitor(settings)
    monitor.observe(1.0)
    f = OverloadFilter(settings, monitor, route="shadowed", priority="low")
    in_flight(1)
    assert (await f(exchange("shadowed"), ok)).status == 200
    assert SHED[("shadowed", "low", "lag_shadow")] == 1


CONFIG_ERRORS = [
    ("priority", {"routes": [{"name": "r", "upstream": "s", "priority": "urgent"}]},
     "routes[0].priority: invalid priority 'urgent'"),
    ("shed-order", {"overload": {"shed_at": {"low": 0.9, "normal": 0.5}}},
     "overload.shed_at: must rise with priority"),
    ("shed-range", {"overload": {"shed_at": {"high": 1.5}}}, "overload.shed_at.high"),
    ("unknown-key", {"overload": {"lag": "1s"}}, "overload.lag: unknown key"),
    ("adaptive-bounds", {"upstreams": {"s": {"endpoints": ["http://127.0.0.1:1"],
                         "adaptive_concurrency": {"min_limit": 10, "max_limit": 5}}}},
     "upstreams.s.adaptive_concurrency: max_limit must be >= min_limit"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), [c[1:] for c in CONFIG_ERRORS],
                         ids=[c[0] for c in CONFIG_ERRORS])  # fmt: skip
def test_config_errors_name_their_path(extra: dict[str, Any], message: str) -> None:
    data = {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "upstreams": {"s": {"endpoints": ["http://127.0.0.1:1"]}},
        "routes": [{"name": "r", "upstream": "s"}],
        **extra,
    }
    with pytest.raises(ConfigErrors) as err:
        validate_data(data, "t")
    assert any(str(e).startswith(message) for e in err.value.errors), err.value


def test_defaults() -> None:
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:8080"}],
            "upstreams": {"s": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [{"name": "r", "upstream": "s"}],
        },
        "t",
    )
    assert cfg.overload is None and cfg.routes[0].priority == "normal"
    assert cfg.upstreams["s"].adaptive_concurrency is None and cfg.routes[0].dedup is None


async def test_blocked_event_loop_sheds_low_before_high(upstream: int, worker_on: Any) -> None:
    """The test blocks the worker's own event loop (time.sleep in a callback) across the
    monitor's next sample; the sample sees the lag, and priorities shed in order."""
    priorities = ("low", "normal", "high", "critical")
    routes = [
        {"name": p, "priority": p, "match": {"path": {"prefix": f"/{p}"}}} for p in priorities
    ]
    overload = {
        "lag_threshold": "1s",
        "check_interval": "500ms",
        "shed_at": {"low": 0.2, "normal": 0.5, "high": 0.8},
    }
    gw = await worker_on(base_config(f"http://127.0.0.1:{upstream}", routes, overload=overload))
    monitor = gw.runtime.overload
    port = gw.bound[0][1]
    loop = asyncio.get_running_loop()

    async def statuses(s: aiohttp.ClientSession) -> dict[str, int]:
        async def one(p: str) -> int:
            async with s.get(f"http://127.0.0.1:{port}/{p}") as r:
                await r.read()
                return r.status

        got = await asyncio.gather(*(one(p) for p in priorities))
        return dict(zip(priorities, got, strict=True))

    async with aiohttp.ClientSession() as s:
        assert set((await statuses(s)).values()) == {200}
        # block for 0.85 / 1.15 / 1.7 s from just after a sample: the next one, due in
        # 0.5 s, comes ~0.35 / 0.65 / 1.2 s late (pressure 0.35 / 0.65 / 1.2)
        expected = [
            (0.85, {"low": 503, "normal": 200, "high": 200, "critical": 200}),
            (1.15, {"low": 503, "normal": 503, "high": 200, "critical": 200}),
            (1.7, {"low": 503, "normal": 503, "high": 503, "critical": 200}),
        ]
        for block_s, want in expected:
            await monitor.next_tick()
            loop.call_soon(time.sleep, block_s)
            await monitor.next_tick()  # the sample that measured the block
            assert await statuses(s) == want, monitor
    flush_all(gw.runtime)
    shed = {p: REGISTRY.get_sample_value("gateway_overload_shed_total",
                                         {"route": p, "priority": p, "reason": "lag"})
            for p in priorities}  # fmt: skip
    assert shed["low"] == 3 and shed["normal"] == 2 and shed["high"] == 1, shed
    assert not shed["critical"]
