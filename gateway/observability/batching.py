"""Per-request observations batched in plain numbers, and the once-a-second flush.

Import these from gateway/observability/metrics.py (which loads this module after its
definitions). `RequestMetrics.observe` is the per-request hot path: a few `dict.get`s
on the request's state, one dict lookup for the series and a few additions; `flush`
hands the numbers to prometheus-client (see `RequestMetrics`). `flush_all` runs in
every worker each FLUSH_INTERVAL_S: requests, upstream latency, breakers, then the
FLUSH_HOOKS features registered (gateway/observability/features.py and others).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gateway.observability.metrics import (
    DURATION_BUCKETS,
    FLUSH_HOOKS,
    METHODS,
    NO_ROUTE,
    OTHER_METHOD,
    STATE_CHANGES,
    STATES,
    STATUS_CLASSES,
    metrics,
)

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from gateway.runtime import Runtime


class _Series:
    """One requests series (or one upstream's latency): its prometheus children and
    what this process observed since the last flush (plain numbers, cheap to add to)."""

    __slots__ = ("buckets", "count", "counter", "histogram", "n", "total")

    def __init__(self, counter: Counter | None, histogram: Histogram) -> None:
        self.counter = counter
        self.histogram = histogram
        self.n = 0
        self.total = 0.0
        self.buckets = [0] * len(BOUNDS)

    def flush(self) -> int:
        """Hand the observations over; how many there were."""
        if not self.n:
            return 0
        n, total, self.n, self.total = self.n, self.total, 0, 0.0
        if self.counter is not None:
            self.counter.inc(n)
        # prometheus-client's Histogram keeps one (non-cumulative) value per bucket
        # and the sum; adding to them is what `observe` does, observation by observation.
        self.histogram._sum.inc(total)
        values = self.histogram._buckets
        buckets = self.buckets
        for i, k in enumerate(buckets):
            if k:
                values[i].inc(k)
                buckets[i] = 0
        return n


BOUNDS: tuple[float, ...] = (*DURATION_BUCKETS, float("inf"))


class RequestMetrics:
    """Per-request observations, batched.

    The hot path (`observe`, `active`) only adds to plain numbers on a series found
    with one dict lookup; `flush` (each worker: every FLUSH_INTERVAL_S, and at stop)
    hands them to prometheus-client. Measured on the small-GET bench, calling
    prometheus-client per request cost ~20 us of CPU per request (most of it in its
    per-call machinery: locks, pid checks, mmap writes), batching about 1-2 us. A
    scrape therefore sees requests up to FLUSH_INTERVAL_S late.
    """

    __slots__ = ("_series", "active", "regions", "worker")

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str, str, str, str], _Series] = {}
        self.active = 0  # requests in flight in this process
        self.worker = "0"  # this process's worker index (the worker label)
        # (upstream, endpoint key) -> region, for upstreams whose endpoints name regions.
        self.regions: dict[tuple[str, str], str] = {}

    def prepare(
        self,
        routes: Iterable[tuple[str, Iterable[str] | None]],
        upstreams: dict[str, str] | None = None,
    ) -> None:
        """At config load: resolve each route's children (2xx..5xx, its upstream).

        `routes`: (name, the methods the route matches or None for any). Unrestricted
        routes get the common methods ahead; the rest resolve on first use (bounded).
        `upstreams`: route name -> the upstream a request to it goes to when the route
        names a plain upstream (versioned or regional routes resolve on first use).
        """
        metrics()
        ups = upstreams or {}
        for name, methods in (*routes, (NO_ROUTE, ("GET", "HEAD", "POST"))):
            wanted = sorted({x if x in METHODS else OTHER_METHOD for x in methods or ()}) or (
                "GET",
                "HEAD",
                "POST",
                "PUT",
                "DELETE",
            )
            for method in wanted:
                for cls in ("2xx", "3xx", "4xx", "5xx"):
                    self._resolve((name, method, cls, ups.get(name, ""), "", ""))

    def prepare_runtime(self, runtime: Runtime) -> None:
        """`prepare` for a Runtime's routes, and its endpoints' regions."""
        from gateway.upstream.locality import RegionalBalancer

        regions: dict[tuple[str, str], str] = {}
        for up in runtime.upstreams.values():
            balancer = up.balancer
            if isinstance(balancer, RegionalBalancer):
                for member in up.members:
                    regions[(up.name, member.key)] = balancer.region_of(member)
        self.regions = regions
        plain = {
            r.name: r.upstream.name
            for r in runtime.table.routes
            if r.upstream is not None
            and r.config.upstream not in runtime.splits
            and (r.upstream.name, r.upstream.members[0].key) not in regions
        }
        self.prepare(((r.name, r.methods) for r in runtime.table.routes), plain)

    def _resolve(self, key: tuple[str, str, str, str, str, str]) -> _Series:
        route, method, cls, upstream, version, region = key
        if method not in METHODS:
            method = OTHER_METHOD
            key = (route, method, cls, upstream, version, region)
        got = self._series.get(key)
        if got is None:
            m = metrics()
            got = self._series[key] = _Series(
                m.requests.labels(*key), m.request_duration.labels(*key)
            )
        return got

    def observe(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        state: dict[str, Any] | None = None,
    ) -> None:
        """One answered request; `state` is its Exchange's (what the proxy recorded:
        "upstream", "endpoint"; the version split: "version")."""
        cls = STATUS_CLASSES[status // 100] if 100 <= status < 600 else "5xx"
        upstream = version = region = ""
        if state:
            upstream = state.get("upstream", "")
            version = state.get("version", "")
            if self.regions:
                endpoint = state.get("endpoint")
                if endpoint is not None:
                    region = self.regions.get((upstream, endpoint.key), "")
        key = (route, method, cls, upstream, version, region)
        got = self._series.get(key)
        if got is None:
            got = self._resolve(key)
        got.n += 1
        got.total += seconds
        got.buckets[bisect_left(BOUNDS, seconds)] += 1

    def region_of(self, state: dict[str, Any]) -> str | None:
        """The region of the endpoint that served (for the access log), if any."""
        endpoint = state.get("endpoint")
        if endpoint is None or not self.regions:
            return None
        return self.regions.get((state.get("upstream", ""), endpoint.key))

    def flush(self) -> None:
        """Hand what was observed since the last flush to prometheus-client."""
        m = metrics()
        m.in_flight.set(self.active)
        n = 0
        for series in self._series.values():
            n += series.flush()
        worker = m.worker_requests.labels(self.worker)  # exported from the first flush
        if n:
            worker.inc(n)


class UpstreamLatency:
    """Time to each upstream response head, batched per upstream as requests are
    (`observe` from the proxy: one dict lookup and a few additions)."""

    __slots__ = ("_series",)

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}

    def observe(self, upstream: str, seconds: float) -> None:
        got = self._series.get(upstream)
        if got is None:
            got = self._series[upstream] = _Series(
                None, metrics().upstream_duration.labels(upstream)
            )
        got.n += 1
        got.total += seconds
        got.buckets[bisect_left(BOUNDS, seconds)] += 1

    def flush(self) -> None:
        for series in self._series.values():
            series.flush()


FLUSH_INTERVAL_S: float = 1.0


async def flush_periodically(
    runtime: Callable[[], Runtime], interval_s: float = FLUSH_INTERVAL_S
) -> None:
    """A worker's task: flush request metrics and read the breakers' counters until
    cancelled (then once more)."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            flush_all(runtime())
    finally:
        flush_all(runtime())


def flush_all(runtime: Runtime) -> None:
    REQUESTS.flush()
    UPSTREAM_LATENCY.flush()
    BREAKERS.observe(runtime)
    for hook in FLUSH_HOOKS:
        hook(runtime)


class BreakerMetrics:
    """Breaker states and transitions, read from the breakers at each flush (they
    count transitions themselves; nothing is added to their hot path). Each worker
    has its own breakers: transitions add up over workers, states show 1 where any
    live worker's breaker is in that state."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        # (upstream, endpoint, from, to) -> (the breaker's id, its count last flushed)
        self._seen: dict[tuple[str, str, str, str], tuple[int, int]] = {}

    def observe(self, runtime: Runtime) -> None:
        m = metrics()
        for up in runtime.upstreams.values():
            for member in up.members:
                breaker = member.breaker
                for state in STATES:
                    m.breaker_state.labels(up.name, member.key, state.value).set(
                        1 if breaker.state is state else 0
                    )
                for old_state, new_state in STATE_CHANGES:
                    m.breaker_transitions.labels(up.name, member.key, old_state, new_state)
                for (old, new), count in list(breaker.transitions.items()):
                    key = (up.name, member.key, old.value, new.value)
                    ident, before = self._seen.get(key, (id(breaker), 0))
                    if ident != id(breaker) or count < before:
                        before = 0  # a new breaker (new settings): its own count
                    if count > before:
                        m.breaker_transitions.labels(*key).inc(count - before)
                    self._seen[key] = (id(breaker), count)


BREAKERS: BreakerMetrics = BreakerMetrics()


REQUESTS: RequestMetrics = RequestMetrics()
UPSTREAM_LATENCY: UpstreamLatency = UpstreamLatency()
