"""Adaptive concurrency: the gradient controller on a fake clock, then end to end.

The table drives one limiter through phases of (latency, demand, duration): each step
admits up to `demand` requests, moves the clock by the latency, and samples and
releases them, as a closed-loop client population would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from gateway.config.overload_model import AdaptiveConcurrency
from gateway.observability.metrics import flush_all
from gateway.upstream.adaptive import AdaptiveLimiter
from tests.overload.conftest import Counting, FakeClock, base_config


def limiter(clock: FakeClock, **settings: Any) -> AdaptiveLimiter:
    cfg = AdaptiveConcurrency(
        **{"min_limit": 3, "max_limit": 500, "min_rtt_requests": 9, **settings}
    )
    return AdaptiveLimiter("svc", cfg, clock, rng=lambda: 0.0)


def run(lim: AdaptiveLimiter, clock: FakeClock, rtt_s: float, demand: int, seconds: float) -> int:
    """Closed-loop load; returns how many requests were refused."""
    refused = 0
    end = clock.now + seconds
    while clock.now < end:
        admitted = 0
        for _ in range(demand):
            if lim.try_acquire():
                admitted += 1
            else:
                refused += 1
        started = clock.now
        clock.advance(rtt_s)
        for _ in range(admitted):
            lim.sample(started)
            lim.release()
    return refused


Phase = tuple[float, int, float]  # latency s, demand, seconds
Check = Callable[[AdaptiveLimiter, list[float]], bool]

CASES: list[tuple[str, dict[str, Any], list[Phase], Check]] = [
    ("measures-min-rtt-first", {},
     [(0.005, 50, 0.05)],
     lambda lim, limits: lim.min_rtt_s == pytest.approx(0.005) and not lim.measuring),
    ("grows-while-latency-stays-at-min-rtt", {},
     [(0.005, 100, 2.0)],
     lambda lim, limits: limits[-1] > 50),
    ("never-above-max-limit", {"max_limit": 40},
     [(0.005, 1000, 3.0)],
     lambda lim, limits: lim.limit == 40 and lim.cap == 40),
    ("not-grown-while-unused", {},
     [(0.005, 1, 2.0)],
     lambda lim, limits: lim.limit == 3),
    ("shrinks-when-latency-rises", {},
     [(0.005, 100, 2.0), (0.050, 100, 0.5)],
     lambda lim, limits: limits[-1] < limits[0] / 2),
    ("never-below-min-limit", {},
     [(0.005, 100, 2.0), (0.500, 100, 10.0)],
     lambda lim, limits: lim.limit == 3 and lim.cap == 3),
    ("grows-back-when-latency-recovers", {},
     [(0.005, 100, 2.0), (0.500, 100, 10.0), (0.005, 100, 2.0)],
     lambda lim, limits: limits[1] == 3 and limits[2] > 50),
    ("buffer-tolerates-some-latency", {"buffer": 0.5},
     [(0.005, 100, 1.0), (0.007, 100, 1.0)],
     lambda lim, limits: limits[1] >= limits[0]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "phases", "check"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_controller(settings: dict[str, Any], phases: list[Phase], check: Check) -> None:
    clock = FakeClock()
    lim = limiter(clock, **settings)
    limits = []
    for rtt, demand, seconds in phases:
        run(lim, clock, rtt, demand, seconds)
        limits.append(lim.limit)
    assert lim.settings.min_limit <= lim.limit <= lim.settings.max_limit
    assert check(lim, limits), (lim, limits)


def test_queueing_stays_bounded_when_the_upstream_queues() -> None:
    """A 20-slot upstream at 5 ms: beyond 20 in flight, latency grows with the queue.
    The limit settles where latency is a bounded multiple of min RTT."""
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(2000):
        admitted = sum(1 for _ in range(300) if lim.try_acquire())
        started = clock.now
        clock.advance(0.005 * max(1.0, admitted / 20))
        for _ in range(admitted):
            lim.sample(started)
            lim.release()
    assert 20 <= lim.limit <= 80, lim
    assert lim.sample_rtt_s <= 4 * lim.min_rtt_s, lim


def test_refusals_are_counted_and_slots_return() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert [lim.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert lim.rejected == 1 and lim.in_flight == 3
    lim.unsampled()
    lim.release()
    assert lim.try_acquire()


def test_min_rtt_is_measured_again_at_min_limit() -> None:
    clock = FakeClock()
    lim = limiter(clock, min_rtt_interval=10.0, buffer=1.0)  # 10 ms is within the buffer
    run(lim, clock, 0.005, 100, 2.0)
    grown = lim.cap
    assert grown > 50 and not lim.measuring
    started = clock.now
    while not lim.measuring and clock.now < started + 20.0:
        run(lim, clock, 0.010, 100, 0.01)
    assert 10.0 <= clock.now - started + 2.0 < 11.5  # due ~10 s after the first
    assert lim.measuring and lim.cap == 3 < lim.limit  # pinned while it measures
    run(lim, clock, 0.010, 100, 0.2)
    assert not lim.measuring
    assert lim.min_rtt_s == pytest.approx(0.010)  # the new baseline
    assert lim.cap == int(lim.limit) > 3


def test_samples_from_before_a_measurement_are_not_its_own() -> None:
    clock = FakeClock()
    lim = limiter(clock, min_rtt_requests=2)
    run(lim, clock, 0.005, 10, 0.1)
    assert not lim.measuring
    lim._start_measuring()  # as a due measurement would, with requests out
    assert lim._skip == 0
    for _ in range(3):
        assert lim.try_acquire()
    lim._start_measuring()
    assert lim._skip == 3
    clock.advance(5.0)
    for _ in range(3):
        lim.sample(clock.now - 5.0)  # slow, admitted under the old limit: skipped
        lim.release()
    assert lim.measuring
    run(lim, clock, 0.005, 10, 0.05)
    assert lim.min_rtt_s == pytest.approx(0.005)


async def test_slow_upstream_refused_fast_while_admitted_ones_complete(
    counting: Counting, worker_on: Any
) -> None:
    """5 ms, then 500 ms under concurrent load: the limit falls, the excess gets 503 at
    once with Retry-After, and what is admitted completes."""
    counting.status = 200
    counting.delay_s = 0.005
    # buffer 1.0: client, gateway and upstream share this test's event loop, so latency
    # rises with concurrency on CPU alone; the test is about the 500 ms upstream.
    ac = {"min_limit": 2, "update_interval": "50ms", "min_rtt_requests": 10, "buffer": 1.0}
    gw = await worker_on(
        base_config(counting.url, [{"name": "r"}], upstream={"adaptive_concurrency": ac})
    )
    url = f"http://127.0.0.1:{gw.bound[0][1]}/x"
    lim = gw.runtime.upstreams["svc"].adaptive
    assert lim is not None
    results: list[tuple[int, float, str | None]] = []

    async def client(s: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            async with s.get(url) as r:
                await r.read()
                results.append((r.status, time.monotonic() - t0, r.headers.get("Retry-After")))
            if r.status == 503:
                await asyncio.sleep(0.02)  # a client backing off a little

    async def load(clients: int, seconds: float) -> None:
        stop = asyncio.Event()
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            tasks = [asyncio.create_task(client(s, stop)) for _ in range(clients)]
            await asyncio.sleep(seconds)  # the load's duration, not a wait for a state
            stop.set()
            await asyncio.gather(*tasks)

    await load(6, 1.5)
    fast_limit = lim.limit
    assert lim.min_rtt_s < 0.1 and fast_limit > 4, lim
    results.clear()
    counting.delay_s = 0.5
    await load(30, 2.5)
    refused = [r for r in results if r[0] == 503]
    accepted = [r for r in results if r[0] != 503]
    assert refused and accepted, lim
    assert {r[0] for r in accepted} == {200}  # admitted requests complete, none time out
    assert all(r[2] == "1" for r in refused)
    refused_s = sorted(r[1] for r in refused)
    assert refused_s[len(refused_s) // 2] < 0.25  # refused at once, not after the upstream
    assert lim.limit < fast_limit, lim
    assert lim.rejected >= len(refused)
    flush_all(gw.runtime)
    labels = {"upstream": "svc"}
    assert REGISTRY.get_sample_value(
        "gateway_upstream_adaptive_concurrency_limit", labels) == lim.cap  # fmt: skip
    rejected = REGISTRY.get_sample_value(
        "gateway_upstream_adaptive_concurrency_rejected_total", labels
    )
    assert rejected is not None and rejected >= len(refused)
