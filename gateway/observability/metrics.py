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
children are resolved at config load (`REQUESTS.prepare_runtime`) or on first use and
kept in a dict keyed by (route, method, status class, upstream, version, region); a
request costs a few `dict.get`s on its state, one dict lookup and a few additions to
plain numbers, handed to prometheus-client once a second (`RequestMetrics`, in
batching.py with the flush; imported from here). The
upstream latency (`UPSTREAM_LATENCY`, recorded by the proxy per try) is batched the
same way. Features that count on their own objects (rate limits, screening, bans,
health checks, cache, compression, rollouts, the access log) are read at each flush
by gateway/observability/features.py (a `FLUSH_HOOKS` entry): no prometheus-client
call is made per request.

Labels are bounded: route, upstream, version, region, policy and endpoint names come
from the config, methods from a fixed set (anything else is "OTHER"), status classes
"1xx".."5xx", screening categories and gate names from fixed sets in the code, the
worker label is the worker's index (0..workers-1). Requests answered before an
upstream was chosen (404, 429, 403, cache hits) have upstream="" (Prometheus: the
label is absent); version="" off versioned services, region="" off regional upstreams.

Gauge aggregation across workers (multiprocess_mode): in-flight requests are summed
over live workers, the config hash is the max over live workers (1 loaded, 0 left
behind by a reload), certificate expiry the min over live workers (a worker that has
not picked up a rotated file yet keeps the earlier date showing).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.upstream.breaker import TRANSITIONS, State

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from gateway.runtime import Runtime

STATES = tuple(State)
# Every state change the breaker's table allows: their series exist (at 0) from the
# start, so rate() and alert rules see the first transition.
STATE_CHANGES = tuple(
    sorted({(old.value, new.value) for (old, _), new in TRANSITIONS.items() if old is not new})
)

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
        rmc = ("route", "method", "status_class", "upstream", "version", "region")
        self.requests: Counter = Counter(
            "gateway_requests",
            "Requests answered, by route, method, status class and the upstream, version and "
            "region that served them.",
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
        # Workers and upstream latency.
        self.worker_requests: Counter = Counter(
            "gateway_worker_requests",
            "Requests answered by each worker process (label: the worker's index).",
            ("worker",),
            registry=reg,
        )
        self.worker_info: Gauge = Gauge(
            "gateway_worker_info",
            "1 per live worker process (the multiprocess merge adds its pid).",
            ("worker",),
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.upstream_duration: Histogram = Histogram(
            "gateway_upstream_response_duration_seconds",
            "Time from sending a request to an upstream endpoint to its response head, per try.",
            ("upstream",),
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        # Rate limits (gateway/filters/ratelimit.py, gateway/store/stores.py).
        self.ratelimit_decisions: Counter = Counter(
            "gateway_ratelimit_decisions",
            "Rate-limit decisions by route, policy and decision: allowed, limited (429, or "
            "400 for a missing key), shadow (would have been limited) and store_error "
            "(503: the shared store could not answer a fail-closed policy).",
            ("route", "policy", "decision"),
            registry=reg,
        )
        self.ratelimit_store_errors: Counter = Counter(
            "gateway_ratelimit_store_errors",
            "Rate-limit checks the shared (Redis) store could not answer (error, timeout, "
            "its breaker open).",
            registry=reg,
        )
        self.ratelimit_store_fallbacks: Counter = Counter(
            "gateway_ratelimit_store_fallbacks",
            "Rate-limit checks decided by the worker's memory store because Redis could not "
            "(fail-open policies).",
            registry=reg,
        )
        # Screening (gateway/filters/screening/).
        self.screening_inspected: Counter = Counter(
            "gateway_screening_inspected",
            "Requests the screening filter scanned, by route.",
            ("route",),
            registry=reg,
        )
        self.screening_blocks: Counter = Counter(
            "gateway_screening_blocks",
            "Requests screening blocked (action=blocked, 403) or would have blocked "
            "(action=shadow), by route and by each rule category that scored.",
            ("route", "category", "action"),
            registry=reg,
        )
        # Bans (gateway/filters/bans.py, gateway/store/bans.py).
        self.bans_active: Gauge = Gauge(
            "gateway_bans_active",
            "Client addresses banned now (the largest live worker's view; with Redis every "
            "worker holds the shared set).",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.bans_issued: Counter = Counter(
            "gateway_bans_issued",
            "Bans started (a client blocked too often within the window).",
            registry=reg,
        )
        self.bans_refused: Counter = Counter(
            "gateway_bans_refused",
            "Requests refused as banned, deny-listed or user-agent denied (mode=enforce), or "
            "that would have been (mode=shadow).",
            ("mode",),
            registry=reg,
        )
        # Health checks (gateway/upstream/health.py).
        self.health_checks: Counter = Counter(
            "gateway_upstream_health_checks",
            "Active health checks by endpoint and result (passed, failed); every worker "
            "checks its own endpoints.",
            ("upstream", "endpoint", "result"),
            registry=reg,
        )
        self.endpoint_healthy: Gauge = Gauge(
            "gateway_upstream_endpoint_healthy",
            "1 while the endpoint passes its health checks, 0 when they took it out (the "
            "lowest live worker's view).",
            ("upstream", "endpoint"),
            registry=reg,
            multiprocess_mode="livemin",
        )
        # Cache (gateway/filters/cache.py).
        self.cache_requests: Counter = Counter(
            "gateway_cache_requests",
            "Cacheable-route requests by result: hit (fresh), stale (served stale: "
            "stale-while-revalidate, stale-if-error), revalidated (304 from the upstream), "
            "miss, bypass (method or Range not cached).",
            ("route", "result"),
            registry=reg,
        )
        self.cache_served_bytes: Counter = Counter(
            "gateway_cache_served_bytes",
            "Response body bytes answered from cache entries.",
            ("route",),
            registry=reg,
        )
        self.cache_store_bytes: Gauge = Gauge(
            "gateway_cache_store_bytes",
            "Bytes held by the workers' cache stores (summed over live workers).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        # Compression (gateway/filters/compression.py): ratio = output / input bytes.
        self.compression_responses: Counter = Counter(
            "gateway_compression_responses",
            "Responses compressed, by route and content coding.",
            ("route", "encoding"),
            registry=reg,
        )
        self.compression_input_bytes: Counter = Counter(
            "gateway_compression_input_bytes",
            "Body bytes handed to the compressor, by route and coding.",
            ("route", "encoding"),
            registry=reg,
        )
        self.compression_output_bytes: Counter = Counter(
            "gateway_compression_output_bytes",
            "Compressed body bytes produced, by route and coding.",
            ("route", "encoding"),
            registry=reg,
        )
        # Rollouts (gateway/rollout/): gauges are the highest live worker's value.
        self.rollout_step: Gauge = Gauge(
            "gateway_rollout_step",
            "The rollout's current step index (0-based).",
            ("rollout",),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.rollout_weight: Gauge = Gauge(
            "gateway_rollout_canary_weight_ratio",
            "The share of traffic the rolled-out version gets (0..1).",
            ("rollout",),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.rollout_state: Gauge = Gauge(
            "gateway_rollout_state",
            "1 for the state the rollout is in (pending, progressing, paused, promoted, "
            "failed, aborted).",
            ("rollout", "state"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.rollout_gate: Gauge = Gauge(
            "gateway_rollout_gate_value",
            "The last evaluation's gate inputs (canary/baseline requests, 5xx ratio, p99 "
            "seconds) over the current step's window.",
            ("rollout", "gate"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.rollout_outcomes: Counter = Counter(
            "gateway_rollout_outcomes",
            "Rollouts ended, by outcome: promoted, rolled_back (a gate failed), aborted.",
            ("rollout", "outcome"),
            registry=reg,
        )
        # Access log (gateway/observability/accesslog.py).
        self.access_log_lines: Counter = Counter(
            "gateway_access_log_lines",
            "Access log lines written.",
            registry=reg,
        )
        self.access_log_dropped: Counter = Counter(
            "gateway_access_log_dropped",
            "Access log lines dropped because the writer's queue was full.",
            registry=reg,
        )
        # Feature metrics are added below, one block per feature, each headed by a
        # comment naming the feature (keep blocks separate: several authors add here).
        # Edge authentication (gateway/filters/auth/): refusals are rare, so the
        # filter increments a child it resolved on the reason's first use.
        self.auth_failures: Counter = Counter(
            "gateway_auth_failures",
            "Requests refused by a route's auth checks, by route and reason (key_missing, "
            "key_invalid, token_missing, token_expired, bad_signature, unknown_kid, "
            "signature_mismatch, jwks_unavailable, ...).",
            ("route", "reason"),
            registry=reg,
        )
        # Overload protection and deduplication (gateway/overload.py, filters/overload.py,
        # upstream/adaptive.py, filters/dedup.py): counted in plain ints on the hot
        # path, handed over by their FLUSH_HOOKS.
        self.overload_shed: Counter = Counter(
            "gateway_overload_shed",
            "Requests shed (503) by the overload filter, by route, priority and reason "
            "(lag, in_flight; *_shadow: counted in shadow mode, not shed).",
            ("route", "priority", "reason"),
            registry=reg,
        )
        self.event_loop_lag: Gauge = Gauge(
            "gateway_event_loop_lag_seconds",
            "Smoothed event-loop lag (rises at once, halves per quiet sample); the highest "
            "of the live workers.",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.adaptive_limit: Gauge = Gauge(
            "gateway_upstream_adaptive_concurrency_limit",
            "Requests each upstream's adaptive concurrency limit admits in flight; summed "
            "over live workers (each adapts its own).",
            ("upstream",),
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.adaptive_rejected: Counter = Counter(
            "gateway_upstream_adaptive_concurrency_rejected",
            "Requests refused (503) because the upstream was at its adaptive limit.",
            ("upstream",),
            registry=reg,
        )
        self.dedup: Counter = Counter(
            "gateway_dedup",
            "Deduplicated requests by route and outcome (stored, replayed, conflict, "
            "mismatch, waited, passed, not_stored, unavailable, too_large).",
            ("route", "outcome"),
            registry=reg,
        )


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


# Per-flush hooks of features that count on their own objects (plain numbers on the
# hot path) and hand the counts to prometheus-client here: `FLUSH_HOOKS.append(fn)`
# at import of the feature's module; each is called with the live Runtime.
FLUSH_HOOKS: list[Callable[[Runtime], None]] = []


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


def worker_started(worker_id: int) -> None:
    """This process serves as worker `worker_id` (the worker label of its counts)."""
    REQUESTS.worker = str(worker_id)
    m = metrics()
    m.worker_info.labels(REQUESTS.worker).set(1)
    for result in ("ok", "failed"):  # exported at 0 from the start (alert rules use them)
        m.config_reloads.labels(result)


# Per-request batching and the flush (gateway/observability/batching.py) use the
# definitions above; import them from here (this module loads that one).
from gateway.observability import batching as _batching  # noqa: E402

BOUNDS = _batching.BOUNDS
BREAKERS = _batching.BREAKERS
FLUSH_INTERVAL_S = _batching.FLUSH_INTERVAL_S
REQUESTS = _batching.REQUESTS
UPSTREAM_LATENCY = _batching.UPSTREAM_LATENCY
BreakerMetrics = _batching.BreakerMetrics
RequestMetrics = _batching.RequestMetrics
UpstreamLatency = _batching.UpstreamLatency
flush_all = _batching.flush_all
flush_periodically = _batching.flush_periodically
