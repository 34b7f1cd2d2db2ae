"""Gateway self-protection: measure the worker's pressure, turn it into admission limits.

`OverloadMonitor` is one per worker (the Runtime keeps it across reloads, the Worker
runs its task). Two signals, as Envoy's overload manager samples resource monitors:

- event-loop lag: a task sleeps `check_interval` and measures by how much it
  overslept; the smoothed lag rises at once to a higher sample (a blocked loop must
  shed now) and decays by half per sample below it (a single slow tick does not
  flap the state). Lag pressure = smoothed lag / `lag_threshold`.
- requests in flight in this process: `REQUESTS.active` (server.py counts them), read
  by the filter itself on every request, so a burst is seen at once.

Both become one list, `limits`, one int per priority rank (PRIORITIES: low, normal,
high, critical): a request is admitted while in-flight <= limits[rank]. Normally
limits[rank] = max_in_flight * shed_at[rank], so as requests pile up low routes shed
first, critical last (at max_in_flight). While lag pressure is at or above a rank's
shed_at, its limit is SHED_ALL (-1) and every request of that rank is shed;
critical is exempt (lag alone never sheds it). The filter (gateway/filters/overload.py)
holds the same list object, so a request costs one index and one comparison, and
reconfiguring on reload changes it in place.

Without an `overload` section the limits are unlimited and no route gets the filter;
the lag is still measured (every IDLE_INTERVAL_S) for the lag gauge.

Metrics (flushed with the others, see FLUSH_HOOKS): the lag gauge, shed requests by
route, priority and reason (counted by the filter in plain ints), and each adaptive
concurrency limiter's limit and refusals (gateway/upstream/adaptive.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING

from gateway.config.overload_model import PRIORITIES, Overload
from gateway.observability.metrics import FLUSH_HOOKS, metrics

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["CRITICAL", "RANKS", "SHED", "SHED_ALL", "UNLIMITED", "OverloadMonitor"]

log = logging.getLogger("gateway.overload")

RANKS = {p: i for i, p in enumerate(PRIORITIES)}
CRITICAL = RANKS["critical"]
SHED_ALL = -1
UNLIMITED = sys.maxsize
IDLE_INTERVAL_S = 0.5

# Shed requests not yet handed to prometheus-client: (route, priority, reason) -> n.
SHED: dict[tuple[str, str, str], int] = {}


class OverloadMonitor:
    """One worker's lag measurement and per-priority admission limits."""

    __slots__ = (
        "_task",
        "_waiters",
        "lag_s",
        "last_sample_s",
        "limits",
        "next_due",
        "settings",
        "shedding",
        "ticks",
    )

    def __init__(self, settings: Overload | None = None) -> None:
        self.settings = settings
        self.limits = [UNLIMITED] * len(PRIORITIES)
        self.lag_s = 0.0  # smoothed
        self.last_sample_s = 0.0
        self.ticks = 0
        self.next_due = 0.0  # loop time of the next lag sample
        self.shedding: tuple[str, ...] = ()  # priorities shed by lag now
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._apply()

    @property
    def interval_s(self) -> float:
        return self.settings.check_interval if self.settings is not None else IDLE_INTERVAL_S

    @property
    def pressure(self) -> float:
        """Lag pressure: smoothed lag over the threshold (0 without settings)."""
        s = self.settings
        return self.lag_s / s.lag_threshold if s is not None else 0.0

    def configure(self, settings: Overload | None) -> None:
        """New settings (a reload): limits recomputed in place."""
        self.settings = settings
        self._apply()

    def observe(self, sample_s: float) -> None:
        """One lag sample (seconds overslept): fast rise, halving decay."""
        sample = max(0.0, sample_s)
        self.last_sample_s = sample
        self.lag_s = sample if sample >= self.lag_s else (self.lag_s + sample) / 2
        self.ticks += 1
        self._apply()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _apply(self) -> None:
        s = self.settings
        limits = self.limits
        if s is None:
            limits[:] = [UNLIMITED] * len(limits)
            self.shedding = ()
            return
        pressure = self.lag_s / s.lag_threshold
        shed = []
        for rank, fraction in enumerate(s.shed_at.fractions()):
            if rank != CRITICAL and pressure >= fraction:
                limits[rank] = SHED_ALL
                shed.append(PRIORITIES[rank])
            else:
                limits[rank] = max(1, int(s.max_in_flight * fraction))
        shedding = tuple(shed)
        if shedding != self.shedding:
            if shedding:
                log.warning(
                    "event-loop lag %.0f ms (threshold %.0f ms): shedding %s routes%s",
                    self.lag_s * 1000,
                    s.lag_threshold * 1000,
                    ", ".join(shedding),
                    " (shadow: counted only)" if s.mode == "shadow" else "",
                )
            else:
                log.warning("event-loop lag %.0f ms: shedding by lag ended", self.lag_s * 1000)
            self.shedding = shedding

    # -- the worker's task ----------------------------------------------------------------

    async def run(self) -> None:
        """Measure the lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            interval = self.interval_s
            start = loop.time()
            self.next_due = start + interval
            await asyncio.sleep(interval)
            self.observe(loop.time() - start - interval)

    def start(self) -> None:
        """Run the measurement in the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def next_tick(self) -> None:
        """Return after the next lag sample (tests wait on this, not on a sleep)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def __repr__(self) -> str:
        return (
            f"<OverloadMonitor lag={self.lag_s * 1000:.1f}ms pressure={self.pressure:.2f}"
            f" shedding={list(self.shedding)} limits={self.limits} ticks={self.ticks}>"
        )


def flush_metrics(runtime: Runtime) -> None:
    """FLUSH_HOOKS: lag, shed counts, adaptive concurrency limits and refusals."""
    m = metrics()
    monitor: OverloadMonitor | None = getattr(runtime, "overload", None)
    if monitor is not None:
        m.event_loop_lag.set(monitor.lag_s)
    for key, n in SHED.items():
        if n:
            m.overload_shed.labels(*key).inc(n)
            SHED[key] = 0
    for up in runtime.upstreams.values():
        limiter = up.adaptive
        if limiter is None:
            continue
        m.adaptive_limit.labels(up.name).set(limiter.cap)
        seen = _REJECTED_SEEN.get(up.name)
        before = seen[1] if seen is not None and seen[0] == id(limiter) else 0
        if limiter.rejected > before:
            m.adaptive_rejected.labels(up.name).inc(limiter.rejected - before)
        _REJECTED_SEEN[up.name] = (id(limiter), limiter.rejected)


# upstream -> (the limiter's id, its refusals last flushed): a new limiter counts anew.
_REJECTED_SEEN: dict[str, tuple[int, int]] = {}

FLUSH_HOOKS.append(flush_metrics)
