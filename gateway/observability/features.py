"""Feature metrics read at flush time from the counters the features keep themselves.

The filters and stores count on their own objects in plain ints (nothing but an
addition on the request path); once a second each worker's flush (`flush_all` in
metrics.py, where `export` is registered as a FLUSH_HOOKS entry at import) reads
them from the live Runtime and hands the differences to prometheus-client:

    rate limits    RateLimitStores counters per (route, policy), store errors, fallbacks
    screening      ScreeningCounters per route: inspected, blocks by (category, action)
    bans           BanState: active bans, bans started, refusals (enforce / shadow)
    health checks  HealthState per (upstream, endpoint): passed, failed, up
    cache          CacheFilter.counts per route, bytes served from entries, store size
    compression    EncodingCounts per (route, coding): responses, bytes in, bytes out
    rollouts       Rollout: step, weight, state, last gate values, outcomes
    access log     lines written and dropped (gateway/observability/accesslog.py)

Counters by difference (`Deltas`): for each series the owning object and the value
last exported are remembered; a different owner (a reload built a new filter) or a
smaller value starts from zero. The owner is held by reference, not by id(), so a
new object at a recycled address is never mistaken for the old one. Known gaps: what
a replaced object counted between the last flush and the swap is not exported; a
series whose object a reload removed (a route, a rollout) keeps its last value until
the worker restarts (prometheus-client's multiprocess files cannot drop a child).

Every series is created at the first flush after the feature exists (value 0), so a
scrape shows it before the feature first acts, and alert rules over it evaluate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.filters.cache import CacheFilter
from gateway.filters.compression import CompressionFilter
from gateway.filters.screening.filter import ScreeningFilter
from gateway.filters.screening.rules import RULES_BY_ID
from gateway.observability import accesslog
from gateway.observability.metrics import FLUSH_HOOKS, metrics
from gateway.rollout.machine import State

if TYPE_CHECKING:
    from prometheus_client import Counter

    from gateway.runtime import Runtime

__all__ = ["Deltas", "export"]

ROLLOUT_STATES = tuple(s.value for s in State)
# Cache filter counters -> the result label (both stale extensions are "stale").
CACHE_RESULTS = (
    ("hit", "hit"),
    ("stale_while_revalidate", "stale"),
    ("stale_if_error", "stale"),
    ("revalidated", "revalidated"),
    ("miss", "miss"),
    ("expired", "miss"),
    ("bypass", "bypass"),
)
RATELIMIT_DECISIONS = (
    ("allowed", "allowed"),
    ("limited", "limited"),
    ("shadow_limited", "shadow"),
    ("unavailable", "store_error"),
)
# Screening category names, fixed by the rule set (bounded label values).
CATEGORIES = tuple(sorted({r.category for r in RULES_BY_ID.values()}))


class Deltas:
    """Cumulative ints on feature objects -> prometheus counters, by difference."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[int, tuple[str, ...]], tuple[object, int]] = {}

    def add(self, counter: Counter, labels: tuple[str, ...], owner: object, value: int) -> None:
        """`owner`'s cumulative `value` for the series `counter{labels}`."""
        key = (id(counter), labels)
        prev = self._seen.get(key)
        before = prev[1] if prev is not None and prev[0] is owner and prev[1] <= value else 0
        child = counter.labels(*labels) if labels else counter
        if value > before:
            child.inc(value - before)
        self._seen[key] = (owner, value)

    def __repr__(self) -> str:
        return f"<Deltas series={len(self._seen)}>"


DELTAS = Deltas()


def export(runtime: Runtime) -> None:
    """Read every feature's counters from `runtime` (a FLUSH_HOOKS entry)."""
    _ratelimits(runtime)
    _filters(runtime)
    _bans(runtime)
    _health(runtime)
    _rollouts(runtime)
    _access_log()


def _ratelimits(runtime: Runtime) -> None:
    m = metrics()
    stores = runtime.stores
    # The stores own the per-(route, policy) counters (kept across reloads).
    for (route, policy), c in list(stores._counters.items()):
        for attr, decision in RATELIMIT_DECISIONS:
            DELTAS.add(m.ratelimit_decisions, (route, policy, decision), c, getattr(c, attr))
    DELTAS.add(m.ratelimit_store_errors, (), stores, stores.store_errors)
    DELTAS.add(m.ratelimit_store_fallbacks, (), stores, stores.fallbacks)


def _filters(runtime: Runtime) -> None:
    m = metrics()
    for route, filters in runtime.filters.items():
        for f in filters.values():
            if isinstance(f, ScreeningFilter):
                c = f.counters
                DELTAS.add(m.screening_inspected, (route,), c, c.inspected)
                for category in f.matcher.categories:
                    for action in ("blocked", "shadow"):
                        n = c.blocks.get((category, action), 0)
                        DELTAS.add(m.screening_blocks, (route, category, action), c, n)
            elif isinstance(f, CacheFilter):
                counts = f.counts
                for result in ("hit", "stale", "revalidated", "miss", "bypass"):
                    n = sum(counts.get(k, 0) for k, r in CACHE_RESULTS if r == result)
                    DELTAS.add(m.cache_requests, (route, result), f, n)
                DELTAS.add(m.cache_served_bytes, (route,), f, counts.get("served_bytes", 0))
            elif isinstance(f, CompressionFilter):
                for coding, ec in f.counts.items():
                    labels = (route, coding)
                    DELTAS.add(m.compression_responses, labels, ec, ec.responses)
                    DELTAS.add(m.compression_input_bytes, labels, ec, ec.bytes_in)
                    DELTAS.add(m.compression_output_bytes, labels, ec, ec.bytes_out)
    held = getattr(runtime.cache, "bytes", None)  # the memory store's size; Redis: none
    if isinstance(held, int):
        m.cache_store_bytes.set(held)


def _bans(runtime: Runtime) -> None:
    store = runtime.bans
    if store is None:
        return
    m = metrics()
    state = store.state
    now = state.clock()
    m.bans_active.set(sum(1 for b in list(state.bans.values()) if b.until > now))
    DELTAS.add(m.bans_issued, (), state, state.banned)
    DELTAS.add(m.bans_refused, ("enforce",), state, state.refused)
    DELTAS.add(m.bans_refused, ("shadow",), state, state.shadow_refused)


def _health(runtime: Runtime) -> None:
    m = metrics()
    for up in runtime.upstreams.values():
        if up.checker is None:
            continue
        for member in up.members:
            h = member.health
            if h.policy is None:
                continue
            DELTAS.add(m.health_checks, (up.name, member.key, "passed"), h, h.checks_passed)
            DELTAS.add(m.health_checks, (up.name, member.key, "failed"), h, h.checks_failed)
            m.endpoint_healthy.labels(up.name, member.key).set(1 if h.up else 0)


def _rollouts(runtime: Runtime) -> None:
    m = metrics()
    for name, r in runtime.rollouts.rollouts.items():
        rec = r.record
        m.rollout_step.labels(name).set(rec.step)
        m.rollout_weight.labels(name).set(r.weight / 100.0)
        for state in ROLLOUT_STATES:
            m.rollout_state.labels(name, state).set(1 if rec.state.value == state else 0)
        verdict = r.last_verdict
        if verdict is not None:
            for gate, value in verdict.values.items():
                if isinstance(value, int | float):
                    m.rollout_gate.labels(name, gate).set(value)
        for outcome in ("promoted", "rolled_back", "aborted"):
            DELTAS.add(m.rollout_outcomes, (name, outcome), r, r.outcomes.get(outcome, 0))


def _access_log() -> None:
    m = metrics()
    stats = accesslog.STATS
    DELTAS.add(m.access_log_lines, (), stats, stats.lines)
    DELTAS.add(m.access_log_dropped, (), stats, stats.dropped + stats.lost)


FLUSH_HOOKS.append(export)
