"""Every Prometheus metric the gateway exports, defined in one place.

Process model: `gateway run` (one process or a supervisor with N workers) creates a
fresh directory and points PROMETHEUS_MULTIPROC_DIR at it before any metric value
exists (`enable_multiprocess`); every process then writes its values to its own
mmap'd files there, spawned workers inheriting the variable. The admin listener's
`GET /metrics` merges the directory with a MultiProcessCollector, the same code path
with one process or many (`exposition`). Without that directory (a Worker run
in-process, as the tests do) the metrics live in the default registry.

The metric objects are created on first use (`metrics()`), after the multiprocess
switch, so importing this module decides nothing.

Hot path: `Handler.handle` calls `REQUESTS.observe` once per request. The labelled
children are resolved at config load (`REQUESTS.prepare`) and kept in a dict keyed
by (route, method, status class); a request costs one dict lookup and a few additions
to plain numbers, handed to prometheus-client once a second (`RequestMetrics`).

Labels are bounded: route names from the config, methods from a fixed set (anything
else is "OTHER"), status classes "1xx".."5xx".

Gauge aggregation across workers (multiprocess_mode): in-flight requests are summed
over live workers, the config hash is the max over live workers (1 loaded, 0 left
behind by a reload), certificate expiry the min over live workers (a worker that has
not picked up a rotated file yet keeps the earlier date showing).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.upstream.breaker import State

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from gateway.runtime import Runtime

STATES = tuple(State)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
)
OTHER_METHOD = "OTHER"
STATUS_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")  # index: status // 100
NO_ROUTE = "(no route)"  # the route label of requests no route matched (404)
# Gateway latencies: sub-millisecond for cached or local answers, up to upstream timeouts.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    """All of the gateway's metrics (one instance per process: see `metrics()`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        rmc = ("route", "method", "status_class")
        self.requests: Counter = Counter(
            "gateway_requests",
            "Requests answered, by route, method and status class.",
            rmc,
            registry=reg,
        )
        self.request_duration: Histogram = Histogram(
            "gateway_request_duration_seconds",
            "Time from route match to the response handed to the client connection "
            "(streamed bodies: to the last chunk).",
            rmc,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.in_flight: Gauge = Gauge(
            "gateway_requests_in_flight",
            "Requests being handled now (matched to a route, not yet answered).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.config_reloads: Counter = Counter(
            "gateway_config_reloads",
            "Config reloads by result (ok, failed), counted in every worker process.",
            ("result",),
            registry=reg,
        )
        self.config_info: Gauge = Gauge(
            "gateway_config_info",
            "1 for the hash of the config file being served, 0 for hashes served before.",
            ("hash",),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.tls_expiry: Gauge = Gauge(
            "gateway_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate served from each certificate file (unix time).",
            ("file",),
            registry=reg,
            multiprocess_mode="livemin",
        )
        ep = ("upstream", "endpoint")
        self.breaker_state: Gauge = Gauge(
            "gateway_upstream_breaker_state",
            "1 for the state each endpoint's circuit breaker is in (closed, open, "
            "half_open); with several workers, 1 if any live worker's breaker is in it.",
            (*ep, "state"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.breaker_transitions: Counter = Counter(
            "gateway_upstream_breaker_transitions",
            "Circuit breaker state changes, by endpoint and from/to state.",
            (*ep, "from_state", "to_state"),
            registry=reg,
        )
        # Feature metrics are added below, one block per feature, each headed by a
        # comment naming the feature (keep blocks separate: several authors add here).


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """This process's metrics, created on first use."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def enable_multiprocess() -> str:
    """Point prometheus-client at a fresh directory (call before any metric exists).

    Returns the directory; `disable_multiprocess` removes it. Spawned worker processes
    inherit the environment variable and write their own files there.
    """
    # In memory where there is a tmpfs: values are written on every request, and mmap'd
    # pages of a disk file get written back and fault again (measured: ~20 us/request
    # more CPU on ext4 than on /dev/shm).
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
    path = tempfile.mkdtemp(prefix="gateway-metrics-", dir=base)
    os.environ[MULTIPROC_ENV] = path
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def disable_multiprocess(path: str) -> None:
    if os.environ.get(MULTIPROC_ENV) == path:
        del os.environ[MULTIPROC_ENV]
    shutil.rmtree(path, ignore_errors=True)


def mark_dead(pid: int) -> None:
    """A worker process is gone: drop its live gauges (counters keep counting it)."""
    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def exposition() -> tuple[bytes, str]:
    """The scrape body and its content type: every process's metrics merged."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )

    path = multiprocess_dir()
    if path is None:
        metrics()  # exported even before the first request
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Series:
    """One (route, method, class) series: its prometheus children and what this
    process observed since the last flush (plain Python numbers, cheap to add to)."""

    __slots__ = ("buckets", "count", "counter", "histogram", "n", "total")

    def __init__(self, counter: Counter, histogram: Histogram) -> None:
        self.counter = counter
        self.histogram = histogram
        self.n = 0
        self.total = 0.0
        self.buckets = [0] * len(BOUNDS)

    def flush(self) -> None:
        if not self.n:
            return
        n, total, self.n, self.total = self.n, self.total, 0, 0.0
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


BOUNDS = (*DURATION_BUCKETS, float("inf"))


class RequestMetrics:
    """Per-request observations, batched.

    The hot path (`observe`, `active`) only adds to plain numbers on a series found
    with one dict lookup; `flush` (each worker: every FLUSH_INTERVAL_S, and at stop)
    hands them to prometheus-client. Measured on the small-GET bench, calling
    prometheus-client per request cost ~20 us of CPU per request (most of it in its
    per-call machinery: locks, pid checks, mmap writes), batching about 1-2 us. A
    scrape therefore sees requests up to FLUSH_INTERVAL_S late.
    """

    __slots__ = ("_series", "active")

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.active = 0  # requests in flight in this process

    def prepare(self, routes: Iterable[tuple[str, Iterable[str] | None]]) -> None:
        """At config load: resolve (route, method, class) children for each route.

        `routes`: (name, the methods the route matches or None for any). Unrestricted
        routes get the common methods ahead; the rest resolve on first use (bounded).
        """
        metrics()
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
                    self._resolve(name, method, cls)

    def _resolve(self, route: str, method: str, cls: str) -> _Series:
        if method not in METHODS:
            method = OTHER_METHOD
        key = (route, method, cls)
        got = self._series.get(key)
        if got is None:
            m = metrics()
            got = self._series[key] = _Series(
                m.requests.labels(route, method, cls),
                m.request_duration.labels(route, method, cls),
            )
        return got

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        cls = STATUS_CLASSES[status // 100] if 100 <= status < 600 else "5xx"
        got = self._series.get((route, method, cls))
        if got is None:
            got = self._resolve(route, method, cls)
        got.n += 1
        got.total += seconds
        got.buckets[bisect_left(BOUNDS, seconds)] += 1

    def flush(self) -> None:
        """Hand what was observed since the last flush to prometheus-client."""
        m = metrics()
        m.in_flight.set(self.active)
        for series in self._series.values():
            series.flush()


FLUSH_INTERVAL_S = 1.0


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


# Per-flush hooks of features that count on their own objects (plain numbers on the
# hot path) and hand the counts to prometheus-client here: `FLUSH_HOOKS.append(fn)`
# at import of the feature's module; each is called with the live Runtime.
FLUSH_HOOKS: list[Callable[[Runtime], None]] = []


def flush_all(runtime: Runtime) -> None:
    REQUESTS.flush()
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
                for (old, new), count in list(breaker.transitions.items()):
                    key = (up.name, member.key, old.value, new.value)
                    ident, before = self._seen.get(key, (id(breaker), 0))
                    if ident != id(breaker) or count < before:
                        before = 0  # a new breaker (new settings): its own count
                    if count > before:
                        m.breaker_transitions.labels(*key).inc(count - before)
                    self._seen[key] = (id(breaker), count)


BREAKERS = BreakerMetrics()


REQUESTS = RequestMetrics()


def config_loaded(digest: str, previous: str | None) -> None:
    m = metrics()
    if previous is not None and previous != digest:
        m.config_info.labels(previous).set(0)
    m.config_info.labels(digest).set(1)


def reload_result(ok: bool) -> None:
    metrics().config_reloads.labels("ok" if ok else "failed").inc()


def certificate_expiries(expiries: dict[str, float]) -> None:
    gauge = metrics().tls_expiry
    for path, not_after in expiries.items():
        gauge.labels(path).set(not_after)
